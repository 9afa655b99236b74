"""The token store and the per-request view of it that the decoder searches."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ChunkKeys", "TokenStore", "RequestStore"]


@dataclass(frozen=True)
class ChunkKeys:
    """Keys of one chunk.

    Attributes:
        token_ids: (L,) int32 token ids of the chunk text alone.
        offsets: (L, 2) int32 character range of each token in the chunk text.
        keys: (L, D) hidden states — a float16 array, or an :class:`~nest_integrations.store.key_formats.EncodedKeys`
            view of compact keys (int8, PQ) that decodes to float32 when sliced; entry j (j < L-1) has key
            ``keys[j]`` and value ``token_ids[j+1]`` whose characters are ``offsets[j+1]``.
    """

    token_ids: np.ndarray
    offsets: np.ndarray
    keys: np.ndarray

    @property
    def n_entries(self) -> int:
        return max(0, len(self.token_ids) - 1)


class TokenStore:
    """Keys of every chunk of a corpus, computed ahead of time or on first use.

    ``encode_fn`` turns a list of chunk indices into their :class:`ChunkKeys`; it is called for the
    chunks that have no keys yet (all of them in :meth:`precompute`, only the retrieved ones
    otherwise). Both paths run the same encoder, so they give the same keys.

    Thread-safe: :meth:`ensure` checks, encodes and stores under ``lock`` (a reentrant lock of its own
    by default; the engine passes its model's gate, so encoding takes its turn on the model like
    decoding does), so concurrent callers encode each chunk once and never see a half-filled store.
    ``encode_fn`` may call :meth:`put` (the lock is reentrant).
    """

    def __init__(
        self,
        n_chunks: int,
        encode_fn: Callable[[Sequence[int]], list[ChunkKeys]],
        *,
        lock: AbstractContextManager[object] | None = None,
        capacity: int | None = None,
    ) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be None (keep every chunk's keys) or >= 0")
        self.n_chunks = n_chunks
        #: chunks whose keys are kept: None = all (precomputed or kept once encoded); 0 = none (encoded
        #: per request, as the paper does); N = the N most recently used (an LRU cache)
        self.capacity = capacity
        self._encode_fn = encode_fn
        self._keys: OrderedDict[int, ChunkKeys] = OrderedDict()
        self._lock: AbstractContextManager[object] = lock if lock is not None else threading.RLock()
        #: chunks encoded so far (every call of ``encode_fn`` counts its chunks)
        self.encoded_chunks = 0

    def __contains__(self, index: int) -> bool:
        return index in self._keys

    def get(self, index: int) -> ChunkKeys:
        return self.gather([index])[index]

    def put(self, index: int, keys: ChunkKeys) -> None:
        with self._lock:
            self._keep(index, keys)

    def _keep(self, index: int, keys: ChunkKeys) -> None:
        if self.capacity == 0:
            return
        self._keys[index] = keys
        self._keys.move_to_end(index)
        if self.capacity is not None:
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)

    def gather(self, indices: Sequence[int]) -> dict[int, ChunkKeys]:
        """The keys of ``indices``, encoding the chunks that have none (kept as ``capacity`` allows).

        A chunk is encoded once however many threads ask for it at the same time: the others wait for
        it and find it filled (with ``capacity=0`` each request encodes its own chunks).
        """
        return self._gather(indices)[0]

    def _gather(self, indices: Sequence[int]) -> tuple[dict[int, ChunkKeys], int]:
        """(keys of ``indices``, how many chunks this call encoded)."""
        keys = self._keys
        if self.capacity is None and all(i in keys for i in indices):  # the common case, without the lock
            return {i: keys[i] for i in indices}, 0
        with self._lock:
            out = {i: keys[i] for i in indices if i in keys}
            for i in out:
                keys.move_to_end(i)
            missing = sorted({i for i in indices if i not in out})
            if missing:
                self.encoded_chunks += len(missing)
                for i, ck in zip(missing, self._encode_fn(missing), strict=True):
                    out[i] = ck
                    self._keep(i, ck)
            return out, len(missing)

    def ensure(self, indices: Sequence[int]) -> int:
        """Encode the chunks among ``indices`` that have no keys yet; returns how many this call encoded."""
        return self._gather(indices)[1]

    def precompute(self) -> None:
        """Encode every chunk now (indexing time)."""
        self.ensure(range(self.n_chunks))

    def request_view(
        self, chunk_indices: Sequence[int], texts: Sequence[str], device: torch.device | str = "cpu"
    ) -> RequestStore:
        """Gather the entries of ``chunk_indices`` (whose texts are ``texts``) into a :class:`RequestStore`."""
        keys = self.gather(chunk_indices)
        return RequestStore([(i, keys[i]) for i in chunk_indices], texts, device=device)


class RequestStore:
    """The entries of the chunks retrieved for one request, as float32 tensors for exact search.

    Attributes:
        keys: (M, D) float32 keys of all entries; ``sq_norms``: (M,) their squared norms.
        values: (M,) long next-token ids.
        entry_chunk: (M,) position of each entry's chunk in ``chunks``; entry_pos: (M,) its key
            position j (the value is token j+1 of that chunk).
        mask: (M,) bool, True where an entry is masked (already copied, NEST.md §3.7).
        chunks: list of (corpus chunk index, ChunkKeys) in retrieval order; texts: their texts.
    """

    def __init__(
        self, chunks: list[tuple[int, ChunkKeys]], texts: Sequence[str], device: torch.device | str = "cpu"
    ) -> None:
        self.chunks = chunks
        self.texts = list(texts)
        self.chunk_starts: list[int] = []
        key_parts, val_parts, chunk_parts, pos_parts = [], [], [], []
        start = 0
        for c, (_, ck) in enumerate(chunks):
            n = ck.n_entries
            self.chunk_starts.append(start)
            key_parts.append(np.asarray(ck.keys[:n], dtype=np.float32))
            val_parts.append(ck.token_ids[1 : n + 1])
            chunk_parts.append(np.full(n, c, dtype=np.int64))
            pos_parts.append(np.arange(n, dtype=np.int64))
            start += n
        dim = chunks[0][1].keys.shape[1] if chunks else 0
        keys = np.concatenate(key_parts) if key_parts else np.zeros((0, dim), np.float32)
        self.keys = torch.from_numpy(keys).to(device)
        self.sq_norms = (self.keys * self.keys).sum(-1)
        self.values = torch.from_numpy(
            np.concatenate(val_parts).astype(np.int64) if val_parts else np.zeros(0, np.int64)
        ).to(device)
        self.entry_chunk = torch.from_numpy(np.concatenate(chunk_parts) if chunk_parts else np.zeros(0, np.int64))
        self.entry_pos = torch.from_numpy(np.concatenate(pos_parts) if pos_parts else np.zeros(0, np.int64))
        self.mask = torch.zeros(len(self.values), dtype=torch.bool, device=self.keys.device)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def entry_of(self, chunk: int, token_pos: int) -> int:
        """Entry whose VALUE is token ``token_pos`` (≥ 1) of request chunk ``chunk``."""
        return self.chunk_starts[chunk] + token_pos - 1

    def chunk_tokens(self, chunk: int) -> np.ndarray:
        return self.chunks[chunk][1].token_ids
