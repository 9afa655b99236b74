"""The passage-retriever interface shared by every first-stage retriever.

A passage retriever is built on an ordered list of chunk texts and answers a query with the positions
(``index``) of the best-matching chunks in that list, best first. Dense, BM25 and hybrid retrievers in
this package implement it; framework retrievers (LangChain, LlamaIndex) plug in behind the same
interface later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from nest_integrations.errors import ConfigError, EmptyQuestionError

__all__ = ["ScoredChunk", "PassageRetriever", "check_query", "clamp_k", "top_k_indices"]


@dataclass(frozen=True)
class ScoredChunk:
    """One retrieval hit.

    Attributes:
        index: position of the chunk in the list of texts the retriever was built on.
        score: the retriever's relevance score (higher is better; its scale depends on the retriever).
    """

    index: int
    score: float


@runtime_checkable
class PassageRetriever(Protocol):
    """Anything that retrieves chunks of a fixed, ordered chunk list for a query.

    ``retrieve(query, k)`` returns at most ``k`` :class:`ScoredChunk` s, best first, with ``k`` clamped to
    the corpus size (``len(retriever)``). Implementations here raise
    :class:`~nest_integrations.errors.EmptyQuestionError` for an empty / whitespace-only query and
    :class:`~nest_integrations.errors.ConfigError` for a negative ``k``; ``k == 0`` gives ``[]``.
    """

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        """Return the best ``min(k, len(self))`` chunks for ``query``, best first."""
        ...

    def __len__(self) -> int:
        """Number of chunks the retriever was built on."""
        ...


def check_query(query: str) -> str:
    """Return ``query`` unchanged, or raise :class:`EmptyQuestionError` if it is empty / whitespace only."""
    if not isinstance(query, str) or not query.strip():
        raise EmptyQuestionError("the retrieval query is empty; pass a non-empty question or prompt")
    return query


def clamp_k(k: int, n: int) -> int:
    """Clamp a requested number of hits ``k`` to the corpus size ``n``; negative ``k`` raises ConfigError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer, got {type(k).__name__}")
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")
    return min(int(k), n)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``scores`` (shape ``(N,)``), best first.

    Ties are broken by ascending index, also at the cut-off, so the result is fully deterministic.
    ``k`` is clamped to ``N``. Returns an int64 array of shape ``(min(k, N),)``. Runs in
    ``O(N + k log k)`` (partition, then sort of the survivors).
    """
    scores = np.asarray(scores)
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest value
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)[: k - above.shape[0]]
        cand = np.concatenate([above, ties])
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order].astype(np.int64, copy=False)
