"""The passage stage: first-stage retrievers that pick the top-b chunks for a request.

All retrievers implement :class:`PassageRetriever` (``retrieve(query, k) -> list[ScoredChunk]``, best
first, ``index`` = position in the chunk list they were built on):

- :class:`DenseRetriever`: all-MiniLM-L6-v2 cosine similarity (offline encoder, faiss flat index);
- :class:`BM25Retriever`: BM25 (``bm25s``), English stopwords removed;
- :class:`HybridRetriever`: the NEST paper's adaptive fusion of the two (the default).

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

RetrieverKind = Literal["hybrid", "dense", "bm25"]


def make_retriever(
    texts: Sequence[str],
    kind: RetrieverKind = "hybrid",
    *,
    encoder: TextEncoder | None = None,
) -> PassageRetriever:
    """Build a passage retriever of the given kind over ``texts`` (chunk texts, in corpus order).

    Args:
        texts: the chunk texts; hit indices refer to positions in this sequence.
        kind: ``"hybrid"`` (dense + BM25, NEST fusion), ``"dense"`` or ``"bm25"``.
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
    raise ConfigError(f"unknown retriever kind {kind!r}; expected 'hybrid', 'dense' or 'bm25'")
