"""Chunks: the passages NEST retrieves and copies from.

A :class:`Chunk` is a piece of an original document together with exactly where it sits in that
document, so that every copied span can be traced to a character range of the original text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nest_integrations.errors import EmptyCorpusError, OffsetError

__all__ = ["Chunk", "Document", "validate_chunks", "chunks_from_documents"]


@dataclass(frozen=True)
class Document:
    """An original document: its id, full text, and metadata (``source`` = file path / URL if any)."""

    doc_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        src = self.metadata.get("source")
        return None if src is None else str(src)


@dataclass(frozen=True)
class Chunk:
    """A passage of a document.

    Attributes:
        text: the chunk's text, exactly ``document.text[doc_offset : doc_offset + len(text)]``.
        chunk_id: unique id of the chunk within a corpus.
        doc_id: id of the original document.
        doc_offset: character offset of ``text`` in the original document.
        metadata: free metadata (``source``, ``title`` …), copied into citations.
    """

    text: str
    chunk_id: str
    doc_id: str
    doc_offset: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        src = self.metadata.get("source")
        return None if src is None else str(src)

    def check_offset(self, document_text: str) -> None:
        """Raise :class:`OffsetError` unless the chunk's text sits at ``doc_offset`` in ``document_text``."""
        end = self.doc_offset + len(self.text)
        if self.doc_offset < 0 or document_text[self.doc_offset : end] != self.text:
            raise OffsetError(
                f"chunk {self.chunk_id!r}: its text is not at offset {self.doc_offset} of document "
                f"{self.doc_id!r}"
            )


def validate_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """Return the chunks as a list after checking ids are unique and some text is present.

    Whitespace-only chunks are dropped (they hold nothing to retrieve or copy).

    Raises:
        EmptyCorpusError: no chunk holds any non-whitespace text.
        ValueError: two chunks share a ``chunk_id``.
    """
    out: list[Chunk] = []
    seen: set[str] = set()
    for ch in chunks:
        if ch.chunk_id in seen:
            raise ValueError(f"duplicate chunk id {ch.chunk_id!r}")
        seen.add(ch.chunk_id)
        if ch.text.strip():
            out.append(ch)
    if not out:
        raise EmptyCorpusError("the corpus is empty: no chunk holds any text (empty or whitespace-only input)")
    return out


def chunks_from_documents(
    documents: Iterable[Document],
    *,
    chunk_size: int = 800,
    chunk_overlap: int = 0,
) -> list[Chunk]:
    """Split documents into chunks at paragraph / sentence / word boundaries, keeping exact offsets.

    A small framework-free splitter (the framework adapters accept any splitter of theirs). Chunks
    are at most ``chunk_size`` characters, except where a single word is longer. Each chunk's
    ``doc_offset`` is exact by construction and verified.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be > 0")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError("chunk_overlap must be >= 0 and < chunk_size")
    out: list[Chunk] = []
    for doc in documents:
        for i, (start, end) in enumerate(_split_spans(doc.text, chunk_size, chunk_overlap)):
            text = doc.text[start:end]
            meta = dict(doc.metadata)
            ch = Chunk(text=text, chunk_id=f"{doc.doc_id}#{i}", doc_id=doc.doc_id, doc_offset=start, metadata=meta)
            ch.check_offset(doc.text)
            out.append(ch)
    return validate_chunks(out)


_SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def _split_spans(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """Character ranges of chunks: greedy packing up to ``size``, cutting at the coarsest separator."""
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = 0
    # skip leading whitespace so chunks do not start with blanks
    while start < n and text[start].isspace():
        start += 1
    while start < n:
        end = min(n, start + size)
        if end < n:
            window = text[start:end]
            cut = -1
            for sep in _SEPARATORS:
                pos = window.rfind(sep)
                if pos > size // 4:
                    cut = pos + len(sep)
                    break
            if cut > 0:
                end = start + cut
        # trim trailing whitespace of the chunk
        stop = end
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if stop > start:
            spans.append((start, stop))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1) if overlap else end
        while nxt < n and text[nxt].isspace():
            nxt += 1
        start = nxt
    return spans
