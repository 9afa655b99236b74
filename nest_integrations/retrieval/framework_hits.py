"""Framework retrievers' hits mapped back to the datastore's chunk list.

The LangChain and LlamaIndex adapters let any framework retriever or vector store act as NEST's passage
stage. The framework returns documents / nodes; these helpers find the chunk each one is
(:class:`ChunkLookup`: by id, by ``(doc_id, doc_offset)``, or by exact text) and turn the matched results
into :class:`~nest_integrations.retrieval.base.ScoredChunk` s (:func:`collect_hits`), calling the
``on_unmatched`` callback or warning about results that match no chunk.

Nothing here imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nest_integrations.chunks import Chunk
from nest_integrations.retrieval.base import ScoredChunk

__all__ = ["ChunkLookup", "RetrievedItem", "UnmatchedCallback", "collect_hits"]

#: ``on_unmatched(text, metadata) -> index | None``: called for a retrieved document that matches no chunk;
#: it may add a chunk to the datastore and return its position in the chunk list (``None`` skips the hit).
UnmatchedCallback = Callable[[str, dict[str, Any]], int | None]


class ChunkLookup:
    """Finds chunks in a chunk list by id, by position in their document, or by exact text.

    The list may be a live one that the datastore appends to: each lookup first indexes the chunks
    added since the previous one (and re-indexes everything if the list got shorter). The text index
    is only built when a text lookup is first needed. When several chunks share a key, the first wins.
    """

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        """Index ``chunks`` (lazily)."""
        self.chunks = chunks
        self._seen = 0
        self._by_id: dict[str, int] = {}
        self._by_pos: dict[tuple[str, int], int] = {}
        self._by_text: dict[str, int] | None = None

    def _sync(self) -> None:
        n = len(self.chunks)
        if n < self._seen:  # the list was replaced or shrank: start over
            self._seen = 0
            self._by_id.clear()
            self._by_pos.clear()
            if self._by_text is not None:
                self._by_text = {}
        for i in range(self._seen, n):
            ch = self.chunks[i]
            self._by_id.setdefault(ch.chunk_id, i)
            self._by_pos.setdefault((ch.doc_id, ch.doc_offset), i)
            if self._by_text is not None:
                self._by_text.setdefault(ch.text, i)
        self._seen = n

    def by_id(self, chunk_id: Any) -> int | None:
        """Position of the chunk with id ``chunk_id``."""
        if not isinstance(chunk_id, str) or not chunk_id:
            return None
        self._sync()
        return self._by_id.get(chunk_id)

    def by_position(self, doc_id: Any, offset: Any, text: str) -> int | None:
        """Position of the chunk of document ``doc_id`` at ``offset``, provided its text is ``text``."""
        if not isinstance(doc_id, str) or not isinstance(offset, int) or isinstance(offset, bool):
            return None
        self._sync()
        i = self._by_pos.get((doc_id, offset))
        return i if i is not None and self.chunks[i].text == text else None

    def by_text(self, text: str) -> int | None:
        """Position of the first chunk whose text is exactly ``text``."""
        if not text:
            return None
        if self._by_text is None:
            self._by_text = {}
            for i in range(self._seen):
                self._by_text.setdefault(self.chunks[i].text, i)
        self._sync()
        return self._by_text.get(text)


@dataclass(frozen=True)
class RetrievedItem:
    """One result of a framework retriever, before it becomes a :class:`ScoredChunk`.

    Attributes:
        index: matching position in the chunk list, or ``None`` when no chunk matches.
        text: the result's text (passed to ``on_unmatched``).
        metadata: the result's metadata (passed to ``on_unmatched``).
        score: the framework's relevance score, or ``None`` when it gives none.
    """

    index: int | None
    text: str
    metadata: Mapping[str, Any]
    score: float | None = None


def collect_hits(
    items: Sequence[RetrievedItem],
    k: int,
    n_chunks: Callable[[], int],
    on_unmatched: UnmatchedCallback | None,
    framework: str,
) -> list[ScoredChunk]:
    """Turn a framework retriever's results (best first) into at most ``k`` hits, best first.

    Scores are the framework's when it gives one for every result, else ``1 / (rank + 1)`` (``rank``
    = position in the framework's result list). A result matching no chunk goes to ``on_unmatched``
    when given (its return value, a position in the chunk list, becomes the hit; ``None`` skips it);
    without a callback such results are skipped with a single warning naming how many there were.
    A chunk retrieved twice counts once (at its best rank).

    Raises:
        ValueError: ``on_unmatched`` returned a position outside the chunk list.
    """
    use_scores = bool(items) and all(it.score is not None for it in items)
    hits: list[ScoredChunk] = []
    taken: set[int] = set()
    skipped = 0
    for rank, item in enumerate(items):
        if len(hits) >= k:
            break
        index = item.index
        if index is None and on_unmatched is not None:
            index = on_unmatched(item.text, dict(item.metadata))
            if index is not None:
                n = n_chunks()
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                    raise ValueError(
                        f"on_unmatched returned {index!r}, which is not a position in the chunk list "
                        f"(0 .. {n - 1}); it must return the index of the chunk it added, or None"
                    )
            else:
                continue
        if index is None:
            skipped += 1
            continue
        if index in taken:
            continue
        taken.add(index)
        score = float(item.score) if use_scores and item.score is not None else 1.0 / (rank + 1)
        hits.append(ScoredChunk(index=index, score=score))
    if skipped:
        warnings.warn(
            f"{skipped} document(s) returned by the {framework} retriever match no chunk of the datastore "
            "and were skipped; index the datastore's chunks (keeping their ids) or pass on_unmatched",
            UserWarning,
            stacklevel=3,
        )
    return hits
