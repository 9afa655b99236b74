"""How token keys are stored: float16 (exact to half precision), int8 with a per-row scale, or product quantisation.

A datastore's keys are the hidden states of one layer, (N, D) for N corpus tokens — 2·D bytes a token in
float16 (1,152 for the 576-wide default model). A :class:`KeyFormat` turns them into compact arrays and back:

============  =======================================  ==================  =========================================
format        arrays per token                          bytes per token     decoding
============  =======================================  ==================  =========================================
``float16``   ``keys`` (D,) float16                     2·D                 exact (the keys as encoded)
``int8``      ``keys_int8`` (D,) int8, ``key_scales``   D + 2               ``keys_int8 * key_scales`` (symmetric,
              () float16                                                    per-row max-abs scale)
``pqM``       ``pq_codes`` (M,) uint8                   M                   the M sub-vector centroids, concatenated
                                                                            (faiss ``ProductQuantizer``, 256
                                                                            centroids per sub-space, trained on the
                                                                            corpus's own keys)
============  =======================================  ==================  =========================================

Decoded keys are float32 and are what the exact kNN search of a request compares the query with (asymmetric
distance: the query is never quantised). Product quantisation keeps a small codebook per datastore
(``pq_centroids``: (M, 256, D/M) float32, ~590 KB), saved with the keys and recorded in the manifest.

:class:`EncodedKeys` is the (L, D) view of one chunk's encoded keys that :class:`~nest_integrations.store.ChunkKeys`
holds in place of a float16 array: slicing it decodes only the rows asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nest_integrations.errors import ConfigError, DatastoreError

__all__ = ["KeyFormat", "EncodedKeys", "KEY_FORMATS", "DEFAULT_KEY_FORMAT", "dense_keys"]

#: the formats :meth:`KeyFormat.parse` accepts (``pqM`` for any M dividing the hidden size)
KEY_FORMATS = ("float16", "int8", "pqM")
#: the format an in-memory :class:`~nest_integrations.datastore.Datastore` saves in unless told otherwise
DEFAULT_KEY_FORMAT = "float16"
#: ``nest index`` / ``build_on_disk``'s default: :meth:`KeyFormat.auto` (product quantisation, D/3 codes a token)
AUTO_KEY_FORMAT = "auto"
#: below this many tokens ``auto`` keeps float16 keys (a small datastore is small anyway)
AUTO_MIN_TOKENS = 10_000

_PQ_RE = re.compile(r"^pq(\d+)$")
_KSUB = 256  # centroids per PQ sub-space (8-bit codes)
_TRAIN_ROWS = 65_536  # PQ codebooks are trained on at most this many keys, sampled evenly


@dataclass(frozen=True)
class KeyFormat:
    """One way of storing keys: ``name`` is ``"float16"``, ``"int8"`` or ``"pq<M>"``.

    A PQ format is *untrained* until :meth:`train` has fit its codebook on keys (or it was loaded with one);
    encoding with an untrained PQ format raises.
    """

    name: str
    m: int = 0  # PQ sub-quantisers (0 for the other formats)
    centroids: np.ndarray | None = field(default=None, compare=False, repr=False)  # (M, 256, D/M) float32

    @classmethod
    def parse(cls, spec: str | KeyFormat) -> KeyFormat:
        """``"float16"`` | ``"int8"`` | ``"pq64"`` (any M) → a :class:`KeyFormat`.

        Raises:
            ConfigError: an unknown format name.
        """
        if isinstance(spec, KeyFormat):
            return spec
        s = str(spec).strip().lower()
        if s in ("float16", "fp16", "f16"):
            return cls("float16")
        if s == "int8":
            return cls("int8")
        m = _PQ_RE.match(s)
        if m and int(m.group(1)) > 0:
            return cls(s, m=int(m.group(1)))
        raise ConfigError(
            f"unknown key format {spec!r}; expected 'float16', 'int8' or 'pq<M>' (product quantisation with M "
            "one-byte codes per token, M dividing the model's hidden size, e.g. 'pq96')"
        )

    @classmethod
    def auto(cls, dim: int, n_tokens: int) -> KeyFormat:
        """The default format of a datastore built on disk: ``pq<D/3>`` (three dimensions per one-byte code),
        chosen on both dev sets (docs/scale.md: pq192 for the 576-wide default model, 237 bytes a token all files
        counted, strict recall equal to float16's, 94% top-r neighbour overlap); float16 for fewer than
        ``AUTO_MIN_TOKENS`` tokens or a width not divisible by 3."""
        if n_tokens < AUTO_MIN_TOKENS or dim % 3:
            return cls("float16")
        return cls(f"pq{dim // 3}", m=dim // 3)

    # ---- what it stores -------------------------------------------------------------------------
    @property
    def is_pq(self) -> bool:
        return self.m > 0

    @property
    def trained(self) -> bool:
        return not self.is_pq or self.centroids is not None

    def row_arrays(self, dim: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The per-token arrays of this format: file stem → (dtype, row shape)."""
        if self.name == "float16":
            return {"keys": (np.dtype(np.float16), (dim,))}
        if self.name == "int8":
            return {"keys_int8": (np.dtype(np.int8), (dim,)), "key_scales": (np.dtype(np.float16), ())}
        return {"pq_codes": (np.dtype(np.uint8), (self.m,))}

    def bytes_per_token(self, dim: int) -> int:
        """Bytes of key arrays per token (the codebook not counted)."""
        return sum(dt.itemsize * int(np.prod(shape, dtype=np.int64)) for dt, shape in self.row_arrays(dim).values())

    def check_dim(self, dim: int) -> None:
        """Raises ConfigError when this format cannot store ``dim``-wide keys (PQ: M must divide D)."""
        if self.is_pq and (dim % self.m or self.m > dim):
            divisors = [d for d in (32, 48, 64, 72, 96, 128, 144, 192) if dim % d == 0]
            raise ConfigError(
                f"key format {self.name!r}: {self.m} sub-quantisers do not divide the hidden size {dim}; "
                f"use one of {', '.join(f'pq{d}' for d in divisors) or 'float16, int8'}"
            )

    def manifest(self) -> dict[str, Any]:
        """What the datastore manifest records about the format."""
        out: dict[str, Any] = {"name": self.name}
        if self.is_pq:
            out.update(m=self.m, ksub=_KSUB)
        return out

    # ---- training (PQ) --------------------------------------------------------------------------
    def train(self, sample: np.ndarray, *, seed: int = 0) -> KeyFormat:
        """A trained copy of this format: PQ codebooks fit on ``sample`` (n, D) keys; others unchanged.

        Raises:
            DatastoreError: fewer than 256 keys to train a PQ codebook on.
        """
        if not self.is_pq:
            return self
        x = np.ascontiguousarray(sample, dtype=np.float32)
        self.check_dim(x.shape[1])
        if len(x) < _KSUB:
            raise DatastoreError(
                f"key format {self.name!r} needs at least {_KSUB} tokens to train its codebook, the corpus has "
                f"{len(x)}; use 'float16' or 'int8' for so small a datastore"
            )
        import faiss

        faiss.omp_set_num_threads(max(1, faiss.omp_get_max_threads()))
        pq = faiss.ProductQuantizer(x.shape[1], self.m, 8)
        pq.cp.seed = seed
        pq.cp.min_points_per_centroid = 1  # small corpora: train on what there is, without faiss's warning
        pq.train(x)
        cents = faiss.vector_to_array(pq.centroids).reshape(self.m, _KSUB, x.shape[1] // self.m)
        return KeyFormat(self.name, self.m, cents.astype(np.float32))

    @staticmethod
    def training_rows(n_rows: int, limit: int = _TRAIN_ROWS) -> np.ndarray:
        """Evenly spaced row indices (at most ``limit``) of ``n_rows`` keys to train a codebook on."""
        if n_rows <= limit:
            return np.arange(n_rows, dtype=np.int64)
        return np.linspace(0, n_rows - 1, limit).astype(np.int64)

    # ---- encode / decode ------------------------------------------------------------------------
    def encode(self, keys: np.ndarray) -> dict[str, np.ndarray]:
        """(n, D) keys (any float dtype) → this format's arrays, each with n rows."""
        x = np.asarray(keys)
        if self.name == "float16":
            return {"keys": x.astype(np.float16)}
        x = x.astype(np.float32)
        if self.name == "int8":
            amax = np.abs(x).max(axis=1) if len(x) else np.zeros(0, np.float32)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float16)
            q = np.rint(x / scale.astype(np.float32)[:, None]).clip(-127, 127).astype(np.int8)
            return {"keys_int8": q, "key_scales": scale}
        if self.centroids is None:
            raise DatastoreError(f"key format {self.name!r} has no codebook yet (train it on the corpus's keys)")
        return {"pq_codes": _pq_encode(x, self.centroids)}

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """This format's arrays (n rows each) → (n, D) float32 keys."""
        if self.name == "float16":
            return np.asarray(arrays["keys"], dtype=np.float32)
        if self.name == "int8":
            q = np.asarray(arrays["keys_int8"], dtype=np.float32)
            return q * np.asarray(arrays["key_scales"], dtype=np.float32)[:, None]
        if self.centroids is None:
            raise DatastoreError(f"key format {self.name!r} has no codebook (damaged datastore)")
        codes = np.asarray(arrays["pq_codes"], dtype=np.int64)
        m, _, dsub = self.centroids.shape
        out = self.centroids[np.arange(m)[None, :], codes]  # (n, M, dsub)
        return out.reshape(len(codes), m * dsub)

    def view(self, arrays: dict[str, np.ndarray]) -> np.ndarray | EncodedKeys:
        """The (L, D) keys of one chunk as :class:`ChunkKeys` holds them (float16 arrays stay as they are)."""
        if self.name == "float16":
            return arrays["keys"]
        return EncodedKeys(self, arrays)


def _pq_encode(x: np.ndarray, centroids: np.ndarray, block: int = 65_536) -> np.ndarray:
    """(n, D) float32 → (n, M) uint8: the nearest centroid of each sub-vector (squared L2; faiss)."""
    import faiss

    m, ksub, dsub = centroids.shape
    pq = faiss.ProductQuantizer(m * dsub, m, 8)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype=np.float32).ravel(), pq.centroids)
    out = np.empty((len(x), m), dtype=np.uint8)
    for s in range(0, len(x), block):
        out[s : s + block] = pq.compute_codes(np.ascontiguousarray(x[s : s + block], dtype=np.float32))
    return out


class EncodedKeys:
    """The (L, D) keys of one chunk in a compact format; indexing decodes the rows asked for to float32.

    Holds the format's per-token arrays (each with L rows, possibly memory-mapped slices of the datastore
    files). ``keys[a:b]`` → (b−a, D) float32; ``np.asarray(keys)`` decodes everything.
    """

    __slots__ = ("fmt", "arrays", "shape")

    def __init__(self, fmt: KeyFormat, arrays: dict[str, np.ndarray]) -> None:
        self.fmt = fmt
        self.arrays = arrays
        n = len(next(iter(arrays.values())))
        dim = int(fmt.centroids.shape[0] * fmt.centroids.shape[2]) if fmt.is_pq else int(arrays["keys_int8"].shape[1])
        self.shape = (n, dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item: Any) -> np.ndarray:
        if not isinstance(item, slice):
            raise TypeError("EncodedKeys supports slices only (keys[a:b])")
        return self.fmt.decode({k: v[item] for k, v in self.arrays.items()})

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def dense_keys(keys: np.ndarray | EncodedKeys) -> np.ndarray:
    """(L, D) float32 keys of one chunk, whatever format holds them."""
    if isinstance(keys, EncodedKeys):
        return keys[:]
    return np.asarray(keys, dtype=np.float32)
