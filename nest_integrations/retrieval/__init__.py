"""The passage stage: first-stage retrievers that pick the top-b chunks for a request.

All retrievers implement :class:`PassageRetriever` (``retrieve(query, k) -> list[ScoredChunk]``, best
first, ``index`` = position in the chunk list they were built on):

- :class:`DenseRetriever`: all-MiniLM-L6-v2 cosine similarity (offline encoder, faiss flat index);
- :class:`BM25Retriever`: BM25 (``bm25s``), English stopwords removed;
- :class:`HybridRetriever`: the NEST paper's adaptive fusion of the two, or reciprocal rank fusion.

Dense alone is the default: on the mean of squad-dev200 and nq-dev200 it has the best recall@1/@3
(``benchmarks/retrieval_sweep.py``); the paper's fusion leans on BM25, which suits SQuAD only.

Use :func:`make_retriever` to build one by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from nest_integrations.errors import ConfigError
from nest_integrations.retrieval.base import PassageRetriever, ScoredChunk
from nest_integrations.retrieval.bm25 import BM25Retriever
from nest_integrations.retrieval.dense import DenseRetriever, TextEncoder, load_sentence_encoder
from nest_integrations.retrieval.hybrid import HybridRetriever, fuse_scores

__all__ = [
    "PassageRetriever",
    "ScoredChunk",
    "DenseRetriever",
    "BM25Retriever",
    "HybridRetriever",
    "make_retriever",
    "load_sentence_encoder",
    "fuse_scores",
    "TextEncoder",
    "RetrieverKind",
]

RetrieverKind = Literal["dense", "hybrid", "rrf", "bm25"]


def make_retriever(
    texts: Sequence[str],
    kind: RetrieverKind = "dense",
    *,
    encoder: TextEncoder | None = None,
) -> PassageRetriever:
    """Build a passage retriever of the given kind over ``texts`` (chunk texts, in corpus order).

    Args:
        texts: the chunk texts; hit indices refer to positions in this sequence.
        kind: ``"dense"`` (the default: best recall on the mean of both dev sets), ``"hybrid"`` (dense +
            BM25, the NEST paper's score fusion), ``"rrf"`` (dense + BM25, reciprocal rank fusion with dense
            weight 0.8) or ``"bm25"``.
        encoder: sentence encoder for the dense part (default: offline all-MiniLM-L6-v2).

    Raises:
        ConfigError: unknown ``kind``.
        EmptyCorpusError: ``texts`` holds no non-blank chunk.
    """
    if kind == "dense":
        return DenseRetriever(texts, encoder=encoder)
    if kind == "bm25":
        return BM25Retriever(texts)
    if kind == "hybrid":
        return HybridRetriever(DenseRetriever(texts, encoder=encoder), BM25Retriever(texts))
    if kind == "rrf":
        return HybridRetriever(DenseRetriever(texts, encoder=encoder), BM25Retriever(texts), fusion="rrf")
    raise ConfigError(f"unknown retriever kind {kind!r}; expected 'dense', 'hybrid', 'rrf' or 'bm25'")
