"""The default chunking as a LangChain ``TextSplitter`` whose chunks know their exact character ranges.

:class:`BoundaryTextSplitter` cuts exactly as :func:`nest_integrations.chunks.boundary_spans` (the package's
default chunking, which needs no framework): greedy packing into chunks of at most ``chunk_size``
characters, each cut after the coarsest boundary in the last three quarters of its window. Being a
``langchain_text_splitters.TextSplitter``, it works wherever LangChain takes a splitter
(``split_documents``, ``create_documents``, ``chunks_from_langchain(text_splitter=...)``); with
``add_start_index=True`` the ``start_index`` it gives is exact (it is the chunk's range, not a search).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_text_splitters import TextSplitter

from nest_integrations.chunks import BOUNDARIES, boundary_spans, check_split_sizes

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.documents import Document as LCDocument

__all__ = ["BOUNDARIES", "BoundaryTextSplitter", "default_splitter"]

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
        check_split_sizes(chunk_size, chunk_overlap)
        super().__init__(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=len,
            add_start_index=add_start_index,
            strip_whitespace=True,
        )

    def split_spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character ranges of the chunks of ``text``, in order (``text[start:end]`` is a chunk)."""
        return boundary_spans(text, self._chunk_size, self._chunk_overlap)

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


def default_splitter(chunk_size: int = 800, chunk_overlap: int = 0) -> BoundaryTextSplitter:
    """The package's default chunking as a LangChain splitter (same chunks as
    :func:`nest_integrations.chunks.chunks_from_documents` without a splitter).

    Raises:
        ConfigError: ``chunk_size <= 0``, or ``chunk_overlap`` not in ``[0, chunk_size)``.
    """
    return BoundaryTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
