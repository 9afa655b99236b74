"""The NEST datastore: chunks with exact offsets, their token keys and the passage index of one model.

Build it from chunks (:func:`~nest_integrations.chunks.chunks_from_documents`, or any framework splitter:
see :mod:`nest_integrations.langchain.documents` and :mod:`nest_integrations.llama_index.documents`), save it to a directory, load it back memory-mapped,
add / delete / update documents without rebuilding the rest, and get an engine over it::

    store = Datastore.build(lm, chunks)
    store.save("my-store")
    store = Datastore.load("my-store", lm)
    answer = store.engine().generate("Who won Super Bowl 50?")
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nest_integrations.chunks import Chunk, Document, chunks_from_documents, validate_chunks
from nest_integrations.concurrency import model_gate
from nest_integrations.config import NestConfig
from nest_integrations.datastore import persist
from nest_integrations.errors import ConfigError, DatastoreError
from nest_integrations.models import LoadedModel
from nest_integrations.store import ChunkKeys, EncodedKeys, KeyEncoder, KeyFormat, TokenStore
from nest_integrations.store.key_formats import DEFAULT_KEY_FORMAT

__all__ = ["Datastore", "DEFAULT_MAX_TOKENS", "KEY_MODES", "KeyMode"]

#: where a datastore's keys come from (see :class:`Datastore`)
KeyMode = Literal["precomputed", "on_the_fly", "cached"]
KEY_MODES: tuple[str, ...] = ("precomputed", "on_the_fly", "cached")

#: Default cap on the tokens one in-memory build / add may encode (about 2.3 GB of float16 keys in RAM for a
#: 576-wide model).
DEFAULT_MAX_TOKENS = 2_000_000
#: Default cap on the tokens of a datastore built with keys streamed to disk (``build_on_disk``, a new
#: ``nest index`` store): memory does not grow with it; ~11.5 GB on disk with pq192 keys, hours of CPU.
DEFAULT_MAX_STREAMED_TOKENS = 50_000_000

_FINGERPRINT_KEYS = ("weights_hash", "tokenizer_hash", "hidden_size", "dtype")


class Datastore:
    """Chunks + token keys + passage embeddings for one model and key layer.

    Attributes:
        lm: the model the keys were computed with.
        chunks: the chunks, in store order (``chunks[i]`` owns ``keys_of(i)``).
        key_layer: the hidden-state layer the keys come from.
        key_format: how :meth:`save` stores the keys (:class:`~nest_integrations.store.KeyFormat`:
            ``float16``, ``int8`` or ``pq<M>``); a loaded store decodes them at request time.

    Keys are computed at build / add time; a chunk can also be added without keys
    (``compute_keys=False``), in which case they are encoded on first retrieval and kept.

    ``key_mode`` says where keys come from (recorded in the saved manifest):

    * ``precomputed`` (default): every chunk's keys are computed once and saved (memory-mapped on load).
    * ``on_the_fly``: no keys are stored; each request encodes the chunks it retrieved, as the paper does
      (right for a GPU and for corpora too large to keep keys for: only chunk texts and passage
      embeddings are saved).
    * ``cached``: on the fly, keeping the keys of the ``key_cache_chunks`` most recently used chunks.

    All three give the same keys (the same encoder on the same chunk text; equal up to float rounding of
    the batch shape).
    """

    def __init__(
        self,
        lm: LoadedModel,
        chunks: Sequence[Chunk],
        *,
        key_layer: int = -2,
        keys: Sequence[ChunkKeys | None] | None = None,
        passage_embeddings: np.ndarray | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        documents: Iterable[Document] = (),
        key_format: str | KeyFormat = DEFAULT_KEY_FORMAT,
        key_mode: KeyMode = "precomputed",
        key_cache_chunks: int = 1024,
    ) -> None:
        if key_mode not in KEY_MODES:
            raise ConfigError(f"unknown key_mode {key_mode!r}; expected one of {', '.join(KEY_MODES)}")
        if key_cache_chunks < 1:
            raise ConfigError(f"key_cache_chunks must be >= 1, got {key_cache_chunks}")
        self.key_mode: KeyMode = key_mode
        self.key_cache_chunks = key_cache_chunks
        self.lm = lm
        self.key_format = KeyFormat.parse(key_format)
        self.key_format.check_dim(lm.hidden_size)
        #: the original documents (for line numbers and context in citations), by id; optional
        self.documents: dict[str, Document] = {d.doc_id: d for d in documents}
        self.key_layer = key_layer
        self.max_tokens = max_tokens
        self.chunks: list[Chunk] = validate_chunks(chunks)
        self._keys: list[ChunkKeys | None] = list(keys) if keys is not None else [None] * len(self.chunks)
        if len(self._keys) != len(self.chunks):
            raise DatastoreError(f"{len(self._keys)} key sets for {len(self.chunks)} chunks")
        if passage_embeddings is not None and len(passage_embeddings) != len(self.chunks):
            raise DatastoreError(f"{len(passage_embeddings)} passage embeddings for {len(self.chunks)} chunks")
        self._passage_emb = passage_embeddings
        self.encoder = KeyEncoder(lm, key_layer)
        self._retrievers: dict[str, Any] = {}
        self.token_store = self._make_token_store()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        lm: LoadedModel,
        chunks: Iterable[Chunk],
        *,
        key_layer: int = -2,
        compute_keys: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        progress: bool = True,
        documents: Iterable[Document] = (),
        key_format: str | KeyFormat = DEFAULT_KEY_FORMAT,
        key_mode: KeyMode = "precomputed",
        key_cache_chunks: int = 1024,
    ) -> Datastore:
        """Index ``chunks``: token keys of every chunk (unless ``compute_keys=False`` or ``key_mode`` is not
        ``precomputed``), in memory.

        ``documents`` (optional) are kept with the store so citations can show line numbers and context.
        ``key_format``: how :meth:`save` will store the keys (``float16``, ``int8``, ``pq<M>``). To build a
        datastore larger than memory, use :func:`~nest_integrations.datastore.build_on_disk`.

        Raises:
            EmptyCorpusError: no chunk holds text.
            DatastoreError: more than ``max_tokens`` tokens to encode (checked before any encoding).
        """
        store = cls(
            lm,
            list(chunks),
            key_layer=key_layer,
            max_tokens=max_tokens,
            documents=documents,
            key_format=key_format,
            key_mode=key_mode,
            key_cache_chunks=key_cache_chunks,
        )
        if compute_keys and key_mode == "precomputed":
            store._encode_indices(range(len(store.chunks)), progress=progress)
        return store

    @classmethod
    def from_documents(
        cls, documents: Iterable[Document], lm: LoadedModel, *, chunk_size: int = 800, **kwargs: Any
    ) -> Datastore:
        """Split framework-free :class:`Document` objects (built-in splitter) and :meth:`build`."""
        documents = list(documents)
        return cls.build(lm, chunks_from_documents(documents, chunk_size=chunk_size), documents=documents, **kwargs)

    # ---- keys -----------------------------------------------------------------------------------
    def _check_budget(self, chunks: Sequence[Chunk]) -> int:
        """Tokens to encode; raises before any key is computed if more than ``max_tokens``.

        A corpus of more than 8 characters per allowed token is refused without tokenizing (English text
        runs at about 4 characters per token); otherwise tokens are counted, stopping at the limit.
        """
        self._check_budget_chars(chunks)
        tok = self.lm.tokenizer
        n = 0
        for c in chunks:
            n += len(tok(c.text, add_special_tokens=False)["input_ids"])
            if n > self.max_tokens:
                raise self._too_many_tokens()
        return n

    def _check_budget_chars(self, chunks: Sequence[Chunk]) -> None:
        """Raises DatastoreError when the characters alone show far more than ``max_tokens`` tokens."""
        n_chars = sum(len(c.text) for c in chunks)
        if n_chars > 8 * self.max_tokens:
            raise DatastoreError(
                f"indexing stopped before computing keys: {n_chars:,} characters is far more than max_tokens="
                f"{self.max_tokens:,} tokens allow (about {n_chars // 4:,} tokens, "
                f"{n_chars // 4 * self.key_format.bytes_per_token(self.lm.hidden_size) / 1e9:.1f} GB of keys); "
                "raise max_tokens (`--max-tokens` on the command line) if you mean it, or index fewer documents"
            )

    def _too_many_tokens(self) -> DatastoreError:
        gb = self.max_tokens * self.key_format.bytes_per_token(self.lm.hidden_size) / 1e9
        return DatastoreError(
            f"indexing stopped before computing keys: more than {self.max_tokens:,} tokens to encode "
            f"(about {gb:.1f} GB of keys); raise max_tokens "
            "(`--max-tokens` on the command line) if you mean it, or index fewer documents"
        )

    def _encode(self, chunks: Sequence[Chunk], progress: bool = False) -> list[ChunkKeys]:
        """Keys of ``chunks`` (size limit checked first), with a tokens/s progress bar when ``progress``."""
        total = self._check_budget(chunks)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="tok", unit_scale=True, desc="token keys")
        try:
            return list(self.encoder.encode([c.text for c in chunks], progress=bar.update if bar else None))
        finally:
            if bar is not None:
                bar.close()

    def _encode_indices(self, indices: Iterable[int], progress: bool = False) -> None:
        idx = [i for i in indices if self._keys[i] is None]
        if not idx:
            return
        keys = self._encode([self.chunks[i] for i in idx], progress)
        for i, k in zip(idx, keys, strict=True):
            self._keys[i] = k
            self.token_store.put(i, k)

    def _make_token_store(self) -> TokenStore:
        if self.key_mode == "precomputed":

            def encode_fn(indices: Sequence[int]) -> list[ChunkKeys]:
                self._encode_indices(indices)
                return [self._keys[i] for i in indices]  # type: ignore[misc]

            capacity = None
        else:  # on the fly: the token store alone decides what is kept

            def encode_fn(indices: Sequence[int]) -> list[ChunkKeys]:
                return self._encode([self.chunks[i] for i in indices])

            capacity = 0 if self.key_mode == "on_the_fly" else self.key_cache_chunks
        # keys are computed with the model: encoding takes its turn on it like a request's decoding
        ts = TokenStore(len(self.chunks), encode_fn, lock=model_gate(self.lm.model), capacity=capacity)
        for i, k in enumerate(self._keys):
            if k is not None:
                ts.put(i, k)
        return ts

    def keys_of(self, index: int) -> ChunkKeys:
        """The :class:`ChunkKeys` of chunk ``index`` (encoded now if missing)."""
        return self.token_store.get(index)

    @property
    def n_tokens(self) -> int:
        """Tokens with keys in the store."""
        return sum(len(k.token_ids) for k in self._keys if k is not None)

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in the store, in first-appearance order."""
        return list(dict.fromkeys(c.doc_id for c in self.chunks))

    def __len__(self) -> int:
        return len(self.chunks)

    # ---- passage stage --------------------------------------------------------------------------
    def passage_retriever(self, kind: str = "dense") -> Any:
        """The built-in passage retriever over the chunk texts (dense embeddings are stored with the store)."""
        if kind in self._retrievers:
            return self._retrievers[kind]
        from nest_integrations.retrieval import BM25Retriever, DenseRetriever, HybridRetriever

        texts = [c.text for c in self.chunks]
        dense = None
        if kind in ("dense", "hybrid", "rrf"):
            if self._passage_emb is None:
                dense = DenseRetriever(texts)
                self._passage_emb = dense.embeddings
            else:
                dense = DenseRetriever.from_embeddings(np.asarray(self._passage_emb, dtype=np.float32))
        if kind == "dense":
            r: Any = dense
        elif kind == "bm25":
            r = BM25Retriever(texts)
        elif kind == "hybrid":
            r = HybridRetriever(dense, BM25Retriever(texts))
        elif kind == "rrf":
            r = HybridRetriever(dense, BM25Retriever(texts), fusion="rrf")
        else:
            raise ConfigError(f"unknown retriever kind {kind!r}; expected 'dense', 'hybrid', 'rrf' or 'bm25'")
        self._retrievers[kind] = r
        return r

    def engine(self, config: NestConfig | None = None, *, retriever: Any = None) -> Any:
        """A :class:`~nest_integrations.engine.NestEngine` over this store (same chunks and keys).

        ``retriever``: another passage stage (e.g. a framework retriever adapter); default: the
        built-in one of ``config.retriever``. Engines made before an add/delete/update see the old
        store: ask for a new one after changing it.
        """
        from nest_integrations.engine import NestEngine

        cfg = config or NestConfig(key_layer=self.key_layer)
        if cfg.key_layer != self.key_layer:
            raise ConfigError(
                f"this datastore's keys come from layer {self.key_layer}; config.key_layer={cfg.key_layer} "
                "needs a datastore built with that layer"
            )
        return NestEngine(
            self.lm,
            self.chunks,
            cfg,
            retriever=retriever if retriever is not None else self.passage_retriever(cfg.retriever),
            token_store=self.token_store,
        )

    # ---- updates --------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._retrievers.clear()
        self.token_store = self._make_token_store()

    def add(
        self,
        chunks: Iterable[Chunk],
        *,
        documents: Iterable[Document] = (),
        compute_keys: bool = True,
        progress: bool = False,
    ) -> int:
        """Add the chunks of new documents (and optionally the documents); returns how many chunks were added.

        Raises:
            DatastoreError: a chunk id or document id is already in the store (use :meth:`update`).
        """
        new = validate_chunks(chunks)
        have_ids = {c.chunk_id for c in self.chunks}
        have_docs = set(self.doc_ids)
        clash = sorted({c.doc_id for c in new} & have_docs)
        if clash:
            raise DatastoreError(f"document(s) already in the datastore: {', '.join(clash[:5])}; use update()")
        dup = sorted({c.chunk_id for c in new} & have_ids)
        if dup:
            raise DatastoreError(f"chunk id(s) already in the datastore: {', '.join(dup[:5])}")
        keys: list[ChunkKeys | None] = [None] * len(new)
        if compute_keys and self.key_mode == "precomputed":
            keys = list(self._encode(new, progress))
        emb = _embed_passages([c.text for c in new]) if self._passage_emb is not None else None
        # commit: nothing above changed the store
        self.chunks = self.chunks + new
        self._keys = self._keys + keys
        self.documents.update({d.doc_id: d for d in documents})
        if emb is not None:
            self._passage_emb = np.concatenate([np.asarray(self._passage_emb, dtype=np.float32), emb])
        self._changed()
        return len(new)

    def delete(self, doc_ids: str | Iterable[str]) -> int:
        """Remove every chunk of the given documents; returns how many chunks were removed.

        Raises:
            DatastoreError: a document id is not in the store, or nothing would be left.
        """
        ids = {doc_ids} if isinstance(doc_ids, str) else set(doc_ids)
        unknown = sorted(ids - set(self.doc_ids))
        if unknown:
            raise DatastoreError(f"no such document(s) in the datastore: {', '.join(unknown[:5])}")
        keep = [i for i, c in enumerate(self.chunks) if c.doc_id not in ids]
        if not keep:
            raise DatastoreError("deleting these documents would leave the datastore empty")
        removed = len(self.chunks) - len(keep)
        for d in ids:
            self.documents.pop(d, None)
        self.chunks = [self.chunks[i] for i in keep]
        self._keys = [self._keys[i] for i in keep]
        if self._passage_emb is not None:
            self._passage_emb = np.asarray(self._passage_emb)[keep]
        self._changed()
        return removed

    def update(
        self, doc_id: str, chunks: Iterable[Chunk], *, document: Document | None = None, compute_keys: bool = True
    ) -> None:
        """Re-index one changed document: its old chunks are replaced by ``chunks`` (all of ``doc_id``).

        The new chunks are encoded first; if that fails, the store is unchanged.
        """
        new = list(chunks)
        wrong = sorted({c.doc_id for c in new} - {doc_id})
        if wrong:
            raise DatastoreError(f"update({doc_id!r}) got chunks of other documents: {', '.join(wrong[:5])}")
        if doc_id not in set(self.doc_ids):
            raise DatastoreError(f"no such document in the datastore: {doc_id}")
        staging = Datastore(self.lm, new, key_layer=self.key_layer, max_tokens=self.max_tokens)
        if compute_keys and self.key_mode == "precomputed":
            staging._encode_indices(range(len(staging.chunks)))
        keep = [i for i, c in enumerate(self.chunks) if c.doc_id != doc_id]
        emb = None
        if self._passage_emb is not None:
            emb_old = np.asarray(self._passage_emb, dtype=np.float32)[keep]
            emb = np.concatenate([emb_old, _embed_passages([c.text for c in staging.chunks])])
        self.chunks = [self.chunks[i] for i in keep] + staging.chunks
        self._keys = [self._keys[i] for i in keep] + staging._keys
        self._passage_emb = emb
        if document is not None:
            self.documents[doc_id] = document
        else:
            self.documents.pop(doc_id, None)
        self._changed()

    # ---- persistence ----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What a loading model must match: the model fingerprint plus the key layer."""
        return dict(self.lm.fingerprint(), key_layer=self.key_layer)

    def save(
        self, path: str | Path, *, key_format: str | KeyFormat | None = None, _fail_after: str | None = None
    ) -> Path:
        """Save to directory ``path`` atomically (a crash mid-save leaves the previous save loadable).

        Chunks without keys are encoded first. ``key_format`` (default: :attr:`key_format`) is how the keys
        are written this time (:attr:`key_format` is unchanged). A PQ format is trained on the store's keys
        unless this store already holds its codebook (loaded, or trained by an earlier save). Returns ``path``.
        """
        fmt = self.key_format if key_format is None else KeyFormat.parse(key_format)
        fmt.check_dim(self.lm.hidden_size)
        if fmt == self.key_format:  # the same format keeps its trained codebook
            fmt = self.key_format
        if self.key_mode == "precomputed":
            self._encode_indices(range(len(self.chunks)))
        if self._passage_emb is None:
            self.passage_retriever("dense")
        if self.key_mode != "precomputed":
            return self._save_without_keys(Path(path), _fail_after)
        rows = []
        start = 0
        ids, offs = [], []
        for c, k in zip(self.chunks, self._keys, strict=True):
            assert k is not None
            n = len(k.token_ids)
            rows.append(chunk_row(c, start, n))
            ids.append(k.token_ids)
            offs.append(k.offsets)
            start += n
        arrays = {
            "token_ids.npy": np.concatenate(ids).astype(np.int32) if ids else np.zeros(0, np.int32),
            "offsets.npy": np.concatenate(offs).astype(np.int32) if offs else np.zeros((0, 2), np.int32),
        }
        key_arrays, fmt = self._key_arrays(fmt)
        if fmt == self.key_format:
            self.key_format = fmt  # a codebook trained now is kept for the next save
        arrays.update({f"{k}.npy": v for k, v in key_arrays.items()})
        arrays["passages.npy"] = np.asarray(self._passage_emb, dtype=np.float32)
        manifest = self.manifest(fmt, start)
        doc_rows = self.document_rows()
        root = Path(path)
        persist.write_generation(root, manifest, rows, arrays, doc_rows, fail_after=_fail_after)
        return root

    def _save_without_keys(self, root: Path, fail_after: str | None) -> Path:
        """Save an on-the-fly datastore: chunks, documents and passage embeddings, no keys."""
        rows = [chunk_row(c, 0, 0) for c in self.chunks]
        arrays = {"passages.npy": np.asarray(self._passage_emb, dtype=np.float32)}
        manifest = self.manifest(self.key_format, 0)
        manifest.update(format_version=2, key_format=None, key_dtype=None)
        persist.write_generation(root, manifest, rows, arrays, self.document_rows(), fail_after=fail_after)
        return root

    def manifest(self, fmt: KeyFormat, n_tokens: int) -> dict[str, Any]:
        """The manifest fields of a save of this store with keys in ``fmt`` (the file list is added on write)."""
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fingerprint": self.fingerprint(),
            "model_path": str(self.lm.path),
            "n_chunks": len(self.chunks),
            "n_documents": len(self.doc_ids),
            "n_tokens": n_tokens,
            # readers older than compact keys refuse version 2 instead of missing keys.npy
            "format_version": 1 if fmt.name == "float16" else 2,
            "key_dtype": fmt.name,
            "key_format": fmt.manifest(),
            "passage_encoder": "all-MiniLM-L6-v2",
            "key_mode": self.key_mode,
            "key_cache_chunks": self.key_cache_chunks,
        }

    def document_rows(self) -> list[dict[str, Any]]:
        """The rows of ``documents.jsonl``: the original documents kept with the store."""
        return [
            {"doc_id": d.doc_id, "text": d.text, "metadata": _json_safe(dict(d.metadata))}
            for d in self.documents.values()
        ]

    def _key_arrays(self, fmt: KeyFormat) -> tuple[dict[str, np.ndarray], KeyFormat]:
        """Every chunk's keys in ``fmt``, concatenated in chunk order, and ``fmt`` trained (PQ) if it was not.

        Keys already held in this format (a loaded store) are copied as they are, so re-saving never
        quantises twice; others are encoded from their float values.
        """
        dim = self.lm.hidden_size
        keys = [k for k in self._keys if k is not None]
        if not fmt.trained:
            n = sum(len(k.token_ids) for k in keys)
            want = KeyFormat.training_rows(n)
            starts = np.cumsum([0] + [len(k.token_ids) for k in keys])
            sample = []
            for j, k in enumerate(keys):
                lo, hi = np.searchsorted(want, [starts[j], starts[j + 1]])
                if hi > lo:
                    sample.append(np.asarray(k.keys[:], dtype=np.float32)[want[lo:hi] - starts[j]])
            fmt = fmt.train(np.concatenate(sample) if sample else np.zeros((0, dim), np.float32))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in fmt.row_arrays(dim)}
        for k in keys:
            held = k.keys
            if isinstance(held, EncodedKeys) and held.fmt.name == fmt.name and held.fmt.centroids is fmt.centroids:
                enc = held.arrays
            elif fmt.name == "float16" and not isinstance(held, EncodedKeys):
                enc = {"keys": np.asarray(held, dtype=np.float16)}
            else:
                enc = fmt.encode(np.asarray(held[:], dtype=np.float32))
            for name in parts:
                parts[name].append(np.asarray(enc[name]))
        out = {}
        for name, (dt, shape) in fmt.row_arrays(dim).items():
            out[name] = np.concatenate(parts[name]).astype(dt) if parts[name] else np.zeros((0, *shape), dt)
        if fmt.is_pq:
            assert fmt.centroids is not None
            out["pq_centroids"] = np.asarray(fmt.centroids, dtype=np.float32)
        return out, fmt

    @staticmethod
    def stored_dtype(path: str | Path) -> str | None:
        """The model dtype a saved datastore was built with (``None`` if it cannot be read; loading says why)."""
        try:
            return str(persist.read_manifest(Path(path))["fingerprint"]["dtype"])
        except (DatastoreError, KeyError, TypeError):
            return None

    @classmethod
    def load(
        cls,
        path: str | Path,
        lm: LoadedModel,
        *,
        mmap: bool = True,
        verify: bool = True,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> Datastore:
        """Load a saved datastore for ``lm``; keys are memory-mapped (``mmap``) and checksums checked (``verify``).

        Raises:
            DatastoreError: not a datastore, a newer format, damaged files, or built with another
                model / tokenizer / dtype than ``lm``.
        """
        root = Path(path)
        man = persist.read_manifest(root)
        fp = man.get("fingerprint", {})
        # a datastore written by an earlier build has no weights_hash_kind: check it with the hash it was written with
        mine = lm.fingerprint(fp.get("weights_hash_kind", "sample-4x4096"))
        diff = [k for k in _FINGERPRINT_KEYS if fp.get(k) != mine.get(k)]
        if diff and "dtype" in diff and fp.get("model_id") == mine.get("model_id"):
            raise DatastoreError(
                f"{root} was built with {fp.get('model_id')!r} in {fp.get('dtype')}, but the model is loaded in "
                f"{mine.get('dtype')}; load it with dtype={fp.get('dtype')!r} (`--dtype {fp.get('dtype')}` on the "
                "command line) or rebuild the datastore"
            )
        if diff:
            detail = ", ".join(f"{k}: store {fp.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
            raise DatastoreError(
                f"{root} was built with another model ({fp.get('model_id')!r}; {detail}); load it with that "
                "model or rebuild it with this one"
            )
        rows = persist.read_chunk_table(root, man, verify=verify)
        doc_rows = persist.read_chunk_table(root, man, verify=verify, fname="documents.jsonl")
        passages = persist.open_array(root, man, "passages.npy", mmap=False, verify=verify)
        if len(rows) != len(passages):
            raise DatastoreError(f"{root}: {len(rows)} chunks but {len(passages)} passage embeddings")
        key_mode = man.get("key_mode", "precomputed")
        if key_mode not in KEY_MODES:
            raise DatastoreError(f"{root}: unknown key_mode {key_mode!r} in the manifest")
        chunks: list[Chunk] = []
        chunk_keys: list[ChunkKeys | None] = []
        fmt = KeyFormat.parse("float16")
        if key_mode == "precomputed":
            fmt = _stored_key_format(root, man, lm.hidden_size, mmap=mmap, verify=verify)
            token_ids = persist.open_array(root, man, "token_ids.npy", mmap=mmap, verify=verify)
            offsets = persist.open_array(root, man, "offsets.npy", mmap=mmap, verify=verify)
            key_arrays = {
                name: persist.open_array(root, man, f"{name}.npy", mmap=mmap, verify=verify)
                for name in fmt.row_arrays(lm.hidden_size)
            }
            n = int(man.get("n_tokens", -1))
            shapes_ok = len(token_ids) == len(offsets) == n and all(
                len(a) == n and a.shape[1:] == shape
                for a, (_, shape) in zip(key_arrays.values(), fmt.row_arrays(lm.hidden_size).values(), strict=True)
            )
            if not shapes_ok:
                raise DatastoreError(f"{root}: array shapes do not match the manifest (damaged datastore)")
        for r in rows:
            chunks.append(Chunk(r["text"], r["chunk_id"], r["doc_id"], int(r["doc_offset"]), r.get("metadata") or {}))
            if key_mode != "precomputed":
                chunk_keys.append(None)
                continue
            s, m = int(r["token_start"]), int(r["n_tokens"])
            if s < 0 or s + m > n:
                raise DatastoreError(f"{root}: chunk {r['chunk_id']!r} points outside the key file")
            view = fmt.view({name: a[s : s + m] for name, a in key_arrays.items()})
            chunk_keys.append(ChunkKeys(token_ids[s : s + m], offsets[s : s + m], view))  # type: ignore[arg-type]
        return cls(
            lm,
            chunks,
            key_layer=int(fp.get("key_layer", -2)),
            keys=chunk_keys,
            passage_embeddings=passages,
            max_tokens=max_tokens,
            documents=[Document(r["doc_id"], r["text"], r.get("metadata") or {}) for r in doc_rows],
            key_format=fmt,
            key_mode=key_mode,
            key_cache_chunks=int(man.get("key_cache_chunks", 1024)),
        )


def _stored_key_format(root: Path, man: dict[str, Any], dim: int, *, mmap: bool, verify: bool) -> KeyFormat:
    """The key format a manifest records (a datastore written before formats existed holds float16 keys)."""
    info = man.get("key_format") or {"name": man.get("key_dtype", "float16")}
    try:
        fmt = KeyFormat.parse(str(info.get("name")))
        fmt.check_dim(dim)
    except ConfigError as e:
        raise DatastoreError(f"{root}: {e}") from None
    if fmt.is_pq:
        cents = persist.open_array(root, man, "pq_centroids.npy", mmap=False, verify=verify)
        if cents.ndim != 3 or cents.shape[0] != fmt.m or cents.shape[0] * cents.shape[2] != dim:
            raise DatastoreError(
                f"{root}: the PQ codebook's shape {cents.shape} does not fit {fmt.name} keys of width {dim}"
            )
        fmt = KeyFormat(fmt.name, fmt.m, np.asarray(cents, dtype=np.float32))
    return fmt


def _embed_passages(texts: list[str], slice_texts: int = 512) -> np.ndarray:
    """(len(texts), 384) float32 unit-norm passage embeddings with the default sentence encoder.

    Batches of 16: on a CPU as fast as 64 (11.7 s vs 14.4 s for 817 chunks here) and with 200 MB less peak
    memory. Texts go to the encoder ``slice_texts`` at a time and the freed heap is handed back between
    slices, with large allocations memory-mapped (:func:`~nest_integrations._memory.large_allocations_mapped`):
    in one call the allocator's footprint grew with the number of texts (+544 MB for 7,696 chunks).
    """
    from nest_integrations._memory import large_allocations_mapped, release_free_memory
    from nest_integrations.retrieval import load_sentence_encoder

    encoder = load_sentence_encoder()
    parts = []
    with large_allocations_mapped():
        for s in range(0, len(texts), slice_texts):
            out = encoder.encode(
                texts[s : s + slice_texts], batch_size=16, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )  # fmt: skip
            parts.append(np.asarray(out, dtype=np.float32).reshape(len(texts[s : s + slice_texts]), -1))
            release_free_memory()
    if not parts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.concatenate(parts)


def chunk_row(c: Chunk, token_start: int, n_tokens: int) -> dict[str, Any]:
    """One row of ``chunks.jsonl``: the chunk and the range ``[token_start, token_start + n_tokens)`` of its keys."""
    return {
        "chunk_id": c.chunk_id,
        "doc_id": c.doc_id,
        "doc_offset": c.doc_offset,
        "text": c.text,
        "metadata": _json_safe(dict(c.metadata)),
        "token_start": token_start,
        "n_tokens": n_tokens,
    }


def _json_safe(value: Any) -> Any:
    """Metadata as JSON values (non-JSON values become strings, never pickled)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
