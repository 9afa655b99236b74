"""Hybrid passage retrieval: the NEST paper's adaptive fusion of a dense and a sparse (BM25) ranking.

For a request for ``k`` chunks, each retriever returns its top ``N = min(100·k, corpus size)`` chunks.
For each list x (scores ``s_x`` sorted best first):

    η_x = 1 − s_x[rank 101] / max s_x

(dense scores clipped at 0 for this ratio). A sharp list (rank 101 far below the top) has a large η_x.

    η     = 0.7 · (1 − η_sparse) + 0.3 · η_dense
    fused = η · s_dense + (1 − η) · s_sparse

over the union of both lists, where a chunk missing from a list gets that list's minimum score; the top
``k`` fused scores are kept. This mirrors ``KNNTransformer.retrieve_passage`` / ``fusion`` of the official
code (facebookresearch/NEST), with ``0.3`` its ``fusion_coef``.
"""

from __future__ import annotations

from collections.abc import Mapping

from nest_integrations.errors import ConfigError
from nest_integrations.retrieval.base import PassageRetriever, ScoredChunk, check_query, clamp_k

__all__ = [
    "HybridRetriever",
    "fuse_scores",
    "rrf_scores",
    "sharpness",
    "FUSION_COEF",
    "CANDIDATES_PER_HIT",
    "REFERENCE_RANK",
]

FUSION_COEF = 0.3
"""Weight of η_dense in η (the official code's ``fusion_coef``); η_sparse gets ``1 − FUSION_COEF``."""

CANDIDATES_PER_HIT = 100
"""Each list is cut to its top ``N = min(CANDIDATES_PER_HIT · k, corpus size)``."""

REFERENCE_RANK = 101
"""1-based rank whose score measures how sharp a list is (the last score if the list is shorter)."""


def sharpness(scores: list[float], clip_at_zero: bool = False) -> float:
    """η_x = 1 − s[rank 101] / max s for one list of scores (any order).

    Args:
        scores: the list's scores (its top-N).
        clip_at_zero: clip scores at 0 first (done for the dense list, as in the paper).

    ``s[rank 101]`` is the 101st-largest score, or the smallest one when the list holds fewer than 101.
    0/0 guard: an empty list, or ``max s <= 0`` (e.g. every BM25 score 0 because no query term is in the
    corpus, or every dense cosine ``<= 0``), gives η_x = 0 ("flat list"). The result is clipped to
    ``[0, 1]``, which changes nothing for non-negative scores.
    """
    if not scores:
        return 0.0
    s = sorted((max(v, 0.0) if clip_at_zero else v for v in scores), reverse=True)
    top = s[0]
    if not top > 0.0:
        return 0.0
    ref = s[REFERENCE_RANK - 1] if len(s) >= REFERENCE_RANK else s[-1]
    return min(1.0, max(0.0, 1.0 - ref / top))


def fuse_scores(
    dense: Mapping[int, float],
    sparse: Mapping[int, float],
    k: int,
    fusion_coef: float = FUSION_COEF,
) -> list[ScoredChunk]:
    """Fuse a dense and a sparse top-N list into the top ``k`` chunks (pure function, no models).

    Args:
        dense: chunk index → dense score (cosine), the dense retriever's top N.
        sparse: chunk index → sparse score (BM25), the sparse retriever's top N.
        k: number of chunks to keep (``k`` larger than the union keeps the whole union).
        fusion_coef: weight of η_dense in η (paper / official code: 0.3).

    Returns:
        up to ``k`` :class:`ScoredChunk` with ``score = η·s_dense + (1 − η)·s_sparse``, best first, ties
        broken by ascending index.

    Details: η_dense = :func:`sharpness` of the dense scores clipped at 0, η_sparse = :func:`sharpness` of
    the sparse scores (both 0 by the 0/0 guard when a list's max is ``<= 0`` or the list is empty);
    η = ``(1 − fusion_coef)·(1 − η_sparse) + fusion_coef·η_dense``. The fused sum uses the raw
    (unclipped) dense scores, as the official code does. A chunk absent from a list gets that list's
    minimum score; an empty list contributes 0 for every chunk.
    """
    k = clamp_k(k, len(set(dense) | set(sparse)))
    if k == 0:
        return []
    eta_dense = sharpness(list(dense.values()), clip_at_zero=True)
    eta_sparse = sharpness(list(sparse.values()))
    eta = (1.0 - fusion_coef) * (1.0 - eta_sparse) + fusion_coef * eta_dense
    dense_min = min(dense.values()) if dense else 0.0
    sparse_min = min(sparse.values()) if sparse else 0.0
    fused = []
    for idx in set(dense) | set(sparse):
        s = eta * float(dense.get(idx, dense_min)) + (1.0 - eta) * float(sparse.get(idx, sparse_min))
        fused.append((int(idx), s))
    fused.sort(key=lambda t: (-t[1], t[0]))
    return [ScoredChunk(index=i, score=s) for i, s in fused[:k]]


RRF_K = 60
"""The constant of reciprocal rank fusion (Cormack et al., SIGIR 2009): score = Σ w / (RRF_K + rank)."""


def rrf_scores(
    dense: Mapping[int, float],
    sparse: Mapping[int, float],
    k: int,
    dense_weight: float = 0.5,
) -> list[ScoredChunk]:
    """Weighted reciprocal rank fusion of a dense and a sparse top-N list (pure function).

    ``score(c) = dense_weight / (RRF_K + rank_dense(c)) + (1 − dense_weight) / (RRF_K + rank_sparse(c))``
    with 1-based ranks; a chunk absent from a list contributes nothing for that list. Unlike the paper's
    score fusion it ignores the scales of the two lists, so a long BM25 score tail cannot dominate.
    Ties are broken by ascending index.
    """
    k = clamp_k(k, len(set(dense) | set(sparse)))
    if k == 0:
        return []
    fused: dict[int, float] = {}
    for weight, lst in ((dense_weight, dense), (1.0 - dense_weight, sparse)):
        ranked = sorted(lst, key=lambda i: (-lst[i], i))
        for rank, idx in enumerate(ranked, start=1):
            fused[int(idx)] = fused.get(int(idx), 0.0) + weight / (RRF_K + rank)
    out = sorted(fused.items(), key=lambda t: (-t[1], t[0]))
    return [ScoredChunk(index=i, score=s) for i, s in out[:k]]


class HybridRetriever:
    """Dense + sparse retrieval fused with the NEST paper's adaptive weights (see :func:`fuse_scores`).

    Args:
        dense: a retriever with cosine-like scores (e.g. :class:`~.dense.DenseRetriever`).
        sparse: a retriever with non-negative lexical scores (e.g. :class:`~.bm25.BM25Retriever`).
            Both must be built on the same chunk list.
        fusion_coef: weight of η_dense in η (default 0.3, the paper's).

    Scores are fused scores (a convex combination of a cosine and a BM25 score), only comparable within
    one query. When the query shares no term with the corpus every BM25 score is 0, so η_sparse = 0 and
    the ranking is the dense one.

    Raises:
        ConfigError: the two retrievers cover different numbers of chunks.
    """

    def __init__(
        self,
        dense: PassageRetriever,
        sparse: PassageRetriever,
        fusion_coef: float = FUSION_COEF,
        *,
        fusion: str = "paper",
        dense_weight: float = 0.8,
    ) -> None:
        if len(dense) != len(sparse):
            raise ConfigError(
                f"dense ({len(dense)} chunks) and sparse ({len(sparse)} chunks) retrievers must be built "
                "on the same chunk list"
            )
        if not 0.0 <= fusion_coef <= 1.0:
            raise ConfigError(f"fusion_coef must be in [0, 1], got {fusion_coef}")
        if fusion not in ("paper", "rrf"):
            raise ConfigError(f"fusion must be 'paper' or 'rrf', got {fusion!r}")
        self.dense = dense
        self.sparse = sparse
        self.fusion_coef = float(fusion_coef)
        self.fusion = fusion
        self.dense_weight = float(dense_weight)

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        """The ``min(k, len(self))`` best chunks by fused score, best first (ties by index)."""
        query = check_query(query)
        k = clamp_k(k, len(self))
        if k == 0:
            return []
        n = min(CANDIDATES_PER_HIT * k, len(self))
        dense = {h.index: h.score for h in self.dense.retrieve(query, n)}
        sparse = {h.index: h.score for h in self.sparse.retrieve(query, n)}
        if self.fusion == "rrf":
            return rrf_scores(dense, sparse, k, dense_weight=self.dense_weight)
        return fuse_scores(dense, sparse, k, fusion_coef=self.fusion_coef)

    def __len__(self) -> int:
        return len(self.dense)

    def __repr__(self) -> str:
        return f"HybridRetriever(dense={self.dense!r}, sparse={self.sparse!r})"
