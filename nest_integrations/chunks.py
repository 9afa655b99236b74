"""Chunks: the passages NEST retrieves and copies from, and the one path from documents to chunks.

A :class:`Chunk` is a piece of an original document together with exactly where it sits in that
document, so that every copied span can be traced to a character range of the original text.

:func:`chunks_from_documents` is the splitter-to-chunks path of the package: ``nest ask`` (demo corpus or
``--docs``), ``nest index``, ``NestEngine.from_documents``, ``Datastore.from_documents`` and ``nest eval``
all split with it. By default it cuts with :func:`boundary_spans` (no framework
import); it also takes any LangChain ``TextSplitter`` (the same algorithm as one:
:class:`~nest_integrations.langchain.text_splitter.BoundaryTextSplitter`), places every piece at a verified
offset (:func:`~nest_integrations.placement.place_pieces`) and never passes a wrong offset on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nest_integrations.errors import ConfigError, DuplicateIdError, EmptyCorpusError, OffsetError

if TYPE_CHECKING:  # pragma: no cover
    from langchain_text_splitters import TextSplitter

__all__ = ["BOUNDARIES", "Chunk", "Document", "boundary_spans", "check_unique", "chunks_from_documents", "validate_chunks"]

#: Characters per chunk of the default splitter.
DEFAULT_CHUNK_SIZE = 800
#: Characters shared by consecutive chunks of the default splitter.
DEFAULT_CHUNK_OVERLAP = 0


@dataclass(frozen=True)
class Document:
    """An original document: its id, full text, and metadata (``source`` = file path / URL if any)."""

    doc_id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str | None:
        """``metadata["source"]`` as a string, or ``None``."""
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
        """``metadata["source"]`` as a string, or ``None``."""
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


def check_unique(ids: Iterable[str], what: str, hint: str = "") -> None:
    """Raise :class:`DuplicateIdError` naming the first id that occurs twice in ``ids`` (``what``: "chunks" …)."""
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            raise DuplicateIdError(f"two {what} have the same id {ident!r}{'; ' + hint if hint else ''}")
        seen.add(ident)


def validate_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """Return the chunks as a list after checking ids are unique and some text is present.

    Whitespace-only chunks are dropped (they hold nothing to retrieve or copy).

    Raises:
        EmptyCorpusError: no chunk holds any non-whitespace text.
        DuplicateIdError: two chunks share a ``chunk_id`` (a ``ValueError``).
    """
    chunks = list(chunks)
    check_unique((ch.chunk_id for ch in chunks), "chunks")
    out = [ch for ch in chunks if ch.text.strip()]
    if not out:
        raise EmptyCorpusError("the corpus is empty: no chunk holds any text (empty or whitespace-only input)")
    return out


#: Chunk boundaries, coarsest first; a chunk ends right after the first kind found in the last three
#: quarters of its window (the boundary characters stay in the chunk, then trailing whitespace is dropped).
BOUNDARIES: tuple[str, ...] = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def check_split_sizes(chunk_size: Any, chunk_overlap: Any) -> None:
    """Raise :class:`ConfigError` unless ``chunk_size > 0`` and ``0 <= chunk_overlap < chunk_size`` (integers)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
        raise ConfigError(
            f"chunk_overlap must be an integer >= 0 and smaller than chunk_size ({chunk_size}), got {chunk_overlap!r}"
        )


def boundary_spans(text: str, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[tuple[int, int]]:
    """``(start, end)`` character ranges of the default chunks of ``text``, in order.

    Greedy packing into chunks of at most ``chunk_size`` characters, each cut after the coarsest of
    :data:`BOUNDARIES` found in the last three quarters of its window; leading and trailing whitespace of
    every chunk is dropped; a chunk is longer than ``chunk_size`` only where no boundary exists. The next
    chunk starts ``chunk_overlap`` characters before the previous cut (never at or before the previous
    start), then skips whitespace.

    Raises:
        ConfigError: invalid ``chunk_size`` / ``chunk_overlap`` (:func:`check_split_sizes`).
    """
    check_split_sizes(chunk_size, chunk_overlap)
    size, overlap = chunk_size, chunk_overlap
    spans: list[tuple[int, int]] = []
    n = len(text)
    start = 0
    while start < n and text[start].isspace():  # chunks do not start with blanks
        start += 1
    while start < n:
        end = min(n, start + size)
        if end < n:
            window = text[start:end]
            for boundary in BOUNDARIES:
                pos = window.rfind(boundary)
                if pos > size // 4:
                    end = start + pos + len(boundary)
                    break
        stop = end
        while stop > start and text[stop - 1].isspace():  # nor end with blanks
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


def split_pieces(splitter: TextSplitter, text: str) -> list[tuple[str, int | None]]:
    """``(piece_text, proposed_start)`` of the pieces ``splitter`` cuts ``text`` into, in order.

    A splitter that knows its ranges (``split_spans``, as
    :class:`~nest_integrations.langchain.text_splitter.BoundaryTextSplitter`) gives exact starts; any other
    LangChain ``TextSplitter`` gives its ``start_index`` (when made with ``add_start_index=True``) or none,
    to be checked and repaired by :func:`~nest_integrations.placement.place_pieces`.
    """
    spans = getattr(splitter, "split_spans", None)
    if callable(spans):
        return [(text[s:e], s) for s, e in spans(text)]
    return [(d.page_content, d.metadata.get("start_index")) for d in splitter.create_documents([text])]


def chunks_from_documents(
    documents: Iterable[Document],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    *,
    splitter: TextSplitter | None = None,
) -> list[Chunk]:
    """Split documents into chunks, each at its exact, verified offset in its document.

    Args:
        documents: the documents (unique ``doc_id`` s).
        chunk_size: maximum characters per chunk of the default splitter.
        chunk_overlap: characters shared by consecutive chunks of the default splitter.
        splitter: any LangChain ``TextSplitter`` to use instead of the default
            :func:`boundary_spans` (``chunk_size`` /
            ``chunk_overlap`` are then the splitter's own); its chunks must be verbatim pieces of the text.

    Returns:
        Chunks with ids ``f"{doc_id}#{i}"`` (``i`` counts the document's pieces), the document's metadata,
        and ``doc.text[doc_offset:doc_offset + len(chunk.text)] == chunk.text``. Whitespace-only chunks are
        dropped.

    Raises:
        OffsetError: a piece's text is not in its document (the splitter altered the text).
        EmptyCorpusError: no document, or no chunk holds any text.
        DuplicateIdError: two documents share an id.
        ConfigError: invalid ``chunk_size`` / ``chunk_overlap``.
    """
    from nest_integrations.placement import char_overlap, place_pieces, preview

    if splitter is None:
        check_split_sizes(chunk_size, chunk_overlap)
    docs = list(documents)
    check_unique((d.doc_id for d in docs), "documents")
    overlap = chunk_overlap if splitter is None else char_overlap(splitter)
    out: list[Chunk] = []
    for doc in docs:
        if splitter is None:
            pieces: list[tuple[str, int | None]] = [
                (doc.text[s:e], s) for s, e in boundary_spans(doc.text, chunk_size, chunk_overlap)
            ]
        else:
            pieces = split_pieces(splitter, doc.text)
        for i, ((text, _), start) in enumerate(zip(pieces, place_pieces(doc.text, pieces, overlap), strict=True)):
            if start is None:
                raise OffsetError(
                    f"document {doc.doc_id!r}: chunk {i} ({doc.doc_id}#{i}, {preview(text)}) from the text splitter "
                    "does not occur in the document text; use a splitter that returns verbatim pieces of the text"
                )
            chunk = Chunk(text=text, chunk_id=f"{doc.doc_id}#{i}", doc_id=doc.doc_id, doc_offset=start, metadata=dict(doc.metadata))
            chunk.check_offset(doc.text)
            out.append(chunk)
    return validate_chunks(out)
