"""The default text splitter: a LangChain ``TextSplitter`` whose chunks know their exact character ranges.

:class:`BoundaryTextSplitter` packs text greedily into chunks of at most ``chunk_size`` characters, cutting
each chunk after the coarsest boundary found in its window — paragraph (``\\n\\n``), line, sentence
(``". "``, ``"? "``, ``"! "``), clause (``"; "``, ``", "``), word (``" "``) — provided that boundary lies in
the last three quarters of the window. Leading and trailing whitespace of every chunk is dropped, so
chunks never start or end with blanks; a chunk is longer than ``chunk_size`` only where no boundary
exists (one very long word).

It is the splitter of :func:`~nest_integrations.chunks.chunks_from_documents` (and so of ``nest ask``,
``nest index``, ``NestEngine.from_documents`` and ``Datastore.from_documents``); its chunks are the ones
nest-integrations has always produced, so existing datastores and results stay valid. Being a
``langchain_text_splitters.TextSplitter``, it also works wherever LangChain takes a splitter
(``split_documents``, ``create_documents``, ``chunks_from_langchain(text_splitter=...)``); with
``add_start_index=True`` the ``start_index`` it gives is exact (it is the chunk's range, not a search).

This module imports ``langchain_text_splitters`` only (a dependency of the package core, unlike the
LangChain / LlamaIndex frameworks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_text_splitters import TextSplitter

from nest_integrations.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.documents import Document as LCDocument

__all__ = ["BOUNDARIES", "BoundaryTextSplitter"]

#: Chunk boundaries, coarsest first; a chunk ends right after the first kind found in the last three
#: quarters of its window (the boundary characters stay in the chunk, then trailing whitespace is dropped).
BOUNDARIES: tuple[str, ...] = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


class BoundaryTextSplitter(TextSplitter):
    """Greedy boundary-aware packing into chunks of at most ``chunk_size`` characters, with exact ranges.

    Args:
        chunk_size: maximum characters per chunk (> 0).
        chunk_overlap: characters by which a chunk reaches back into the previous one (``0 <= overlap <
            chunk_size``); the next chunk starts ``chunk_overlap`` characters before the previous cut (never
            at or before the previous chunk's start), then skips whitespace.
        add_start_index: put each chunk's exact start offset in ``metadata["start_index"]`` (LangChain's
            option; here the offset is the chunk's range, not a ``str.find``).

    Raises:
        ConfigError: ``chunk_size <= 0``, or ``chunk_overlap`` not in ``[0, chunk_size)`` (a ``ValueError``, as
            LangChain's splitters raise).
    """

    def __init__(self, chunk_size: int = 800, chunk_overlap: int = 0, *, add_start_index: bool = False) -> None:
        """Make a splitter for chunks of at most ``chunk_size`` characters."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
            raise ConfigError(
                f"chunk_overlap must be an integer >= 0 and smaller than chunk_size ({chunk_size}), got {chunk_overlap!r}"
            )
        super().__init__(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=len,
            add_start_index=add_start_index,
            strip_whitespace=True,
        )

    def split_spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character ranges of the chunks of ``text``, in order (``text[start:end]`` is a chunk)."""
        size, overlap = self._chunk_size, self._chunk_overlap
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

    def split_text(self, text: str) -> list[str]:
        """The chunks of ``text`` (LangChain's ``TextSplitter`` interface)."""
        return [text[s:e] for s, e in self.split_spans(text)]

    def create_documents(self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None) -> list[LCDocument]:
        """LangChain documents of the chunks of each text; ``start_index`` (with ``add_start_index``) is exact.

        LangChain's own ``create_documents`` finds each chunk with ``str.find`` from an estimated position;
        the estimate is replaced here by the chunk's range.
        """
        documents = super().create_documents(texts, metadatas)
        if self._add_start_index:
            starts = [start for text in texts for start, _ in self.split_spans(text)]
            for doc, start in zip(documents, starts, strict=True):
                doc.metadata["start_index"] = start
        return documents
