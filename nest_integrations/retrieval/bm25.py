"""Sparse passage retrieval: BM25 over lower-cased word tokens, via the ``bm25s`` library.

Tokenisation is ``bm25s.tokenize`` with its defaults: lower-casing, words of two or more word characters
(regex ``\\b\\w\\w+\\b``), English stopwords removed, no stemming. Chunks and queries are tokenised the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np

from nest_integrations.errors import EmptyCorpusError
from nest_integrations.retrieval.base import ScoredChunk, check_query, clamp_k, top_k_indices

__all__ = ["BM25Retriever"]


def _tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, stopword-free word tokens of each text (a list of token lists, one per text)."""
    out = bm25s.tokenize(texts, lower=True, stopwords="en", return_ids=False, show_progress=False)
    return [list(toks) for toks in out]


class BM25Retriever:
    """BM25 retrieval over the chunk texts (``bm25s``, Lucene BM25 variant).

    Args:
        texts: the chunk texts, in corpus order; hit ``index`` = position in this sequence.
        k1, b: BM25 parameters. Defaults 0.9 / 0.4 are Pyserini's (the Lucene index the official NEST
            code searches).

    Scores are BM25 scores (``>= 0``). :meth:`retrieve` always returns exactly ``min(k, len(self))``
    chunks, **including chunks with score 0** when fewer chunks than that contain a query term, so a
    query with no known term (only stopwords / unseen words) returns the first ``k`` chunks by index,
    all with score 0. Ties are ordered by ascending index.

    Raises:
        EmptyCorpusError: ``texts`` is empty or holds only empty / whitespace-only strings.
    """

    def __init__(self, texts: Sequence[str], k1: float = 0.9, b: float = 0.4) -> None:
        texts = list(texts)
        if not texts or not any(t.strip() for t in texts):
            raise EmptyCorpusError("cannot build a BM25 retriever on an empty corpus (no non-blank chunk)")
        self._n = len(texts)
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.index(_tokenize(texts), show_progress=False)
        self._vocab: dict[str, int] = dict(self._bm25.vocab_dict)

    def query_token_ids(self, query: str) -> list[int]:
        """Vocabulary ids of the query's tokens that occur in the corpus (unknown tokens dropped)."""
        return [self._vocab[t] for t in _tokenize([query])[0] if t and t in self._vocab]

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for ``query``: float32 array of shape ``(N,)`` (all 0 if no term matches).

        Raises:
            EmptyQuestionError: ``query`` is empty / whitespace only.
        """
        ids = self.query_token_ids(check_query(query))
        if not ids:
            return np.zeros(self._n, dtype=np.float32)
        return np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        """The ``min(k, len(self))`` best chunks by BM25 score, best first (zero-score chunks included)."""
        query = check_query(query)
        k = clamp_k(k, self._n)
        if k == 0:
            return []
        s = self.scores(query)
        return [ScoredChunk(index=int(i), score=float(s[i])) for i in top_k_indices(s, k)]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"BM25Retriever(n={self._n}, vocab={len(self._vocab)})"
