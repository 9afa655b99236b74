"""Building a datastore larger than memory: keys streamed to disk as they are encoded, resumable after a crash.

:meth:`Datastore.build` keeps every key in RAM until :meth:`Datastore.save` (1,152 bytes a token for the
default model: 3.2 GB peak for 345k tokens). :func:`build_on_disk` writes each batch's keys straight into
the key files of a staging folder inside the datastore directory and keeps only one batch in memory, so
peak memory is the model plus a fixed working set (a batch of hidden states, the token ids and offsets,
12 bytes a token, and the chunk texts), whatever the corpus size.

Staging folder ``DIR/.build/``::

    plan.json         what is being built: the model fingerprint, key layer, key format, batch size and a
                      hash of every chunk (a re-run with anything different starts over)
    token_ids.npy     (N,) int32 and offsets.npy (N, 2) int32, written whole at the start (in batch order)
    keys.npy | keys_int8.npy + key_scales.npy
                      the key rows, appended batch by batch after a fixed .npy header (final shape)
    progress.json     batches and rows committed: replaced atomically after the key files are fsynced
    passages.npy      the passage embeddings, once every key is written

A crash (kill, power loss, full disk) at any point leaves ``progress.json`` naming only rows that are on
disk; a re-run with the same chunks truncates the key files to those rows and continues with the next
batch. Keys are computed batch by batch in the same length-sorted batches either way, so the result is
identical to an uninterrupted build. Product-quantised keys are staged as float16 first, then the codebook
is trained on a sample and the codes written block by block. Only a complete build becomes a generation
of the datastore (:func:`~nest_integrations.datastore.persist.write_generation`); until then the directory
holds no datastore (or still the previous one, on a rebuild).

Memory: the batches come in length order, so their temporaries differ in shape from one batch to the next;
glibc's allocator keeps the freed blocks and resident memory crept up by ~0.8 GB over 76 batches (300k
tokens). The free heap is handed back to the system after every batch (``malloc_trim``, where the C library
has it), which keeps the key stage's growth to the caches of the math library (bounded by their capacity).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nest_integrations._memory import release_free_memory
from nest_integrations.chunks import Chunk, Document, validate_chunks
from nest_integrations.datastore import persist
from nest_integrations.datastore.datastore import (
    DEFAULT_MAX_STREAMED_TOKENS,
    DEFAULT_MAX_TOKENS,
    Datastore,
    _embed_passages,
    chunk_row,
)
from nest_integrations.errors import DatastoreError, PromptTooLongError
from nest_integrations.models import LoadedModel
from nest_integrations.store import KeyFormat
from nest_integrations.store.key_formats import AUTO_KEY_FORMAT

__all__ = ["build_on_disk", "STAGING_DIR"]

#: the staging folder's name inside the datastore directory
STAGING_DIR = ".build"
_PLAN_VERSION = 1
_BLOCK_ROWS = 32_768  # rows read at a time when quantising staged keys


class _RowFile:
    """A ``.npy`` file of a known final shape, written row block by row block after its header."""

    def __init__(self, path: Path, dtype: np.dtype, n_rows: int, row_shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = row_shape
        self.row_bytes = self.dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (n_rows, *row_shape),
        }
        self._header = header
        self.f: BinaryIO | None = None
        self.data_start = 0

    def open(self, rows_done: int) -> None:
        """Open for appending after ``rows_done`` rows (a fresh file gets its header; a longer one is truncated)."""
        fresh = rows_done == 0 or not self.path.exists()
        self.f = self.path.open("wb" if fresh else "r+b")
        if fresh:
            np.lib.format.write_array_header_1_0(self.f, self._header)
            self.data_start = self.f.tell()
            return
        np.lib.format.read_magic(self.f)
        np.lib.format.read_array_header_1_0(self.f)
        self.data_start = self.f.tell()
        end = self.data_start + rows_done * self.row_bytes
        if self.path.stat().st_size < end:
            raise DatastoreError(f"{self.path}: shorter than its committed rows (staging damaged)")
        self.f.truncate(end)
        self.f.seek(end)

    def append(self, rows: np.ndarray) -> None:
        assert self.f is not None
        self.f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())

    def sync(self) -> None:
        assert self.f is not None
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _plan_id(store: Datastore, fmt: KeyFormat, batch_tokens: int, chunks: Sequence[Chunk]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([_PLAN_VERSION, store.fingerprint(), fmt.name, batch_tokens], sort_keys=True).encode())
    for c in chunks:
        h.update(json.dumps([c.chunk_id, c.doc_id, c.doc_offset, len(c.text)]).encode())
        h.update(hashlib.sha256(c.text.encode("utf-8")).digest())
    return h.hexdigest()


def build_on_disk(
    path: str | Path,
    lm: LoadedModel,
    chunks: Iterable[Chunk],
    *,
    documents: Iterable[Document] = (),
    key_layer: int = -2,
    key_format: str | KeyFormat = AUTO_KEY_FORMAT,
    max_tokens: int | None = None,
    batch_tokens: int = 4096,
    progress: bool = True,
    _on_event: Callable[[str, int], None] | None = None,
) -> Datastore:
    """Build the datastore of ``chunks`` in directory ``path`` with bounded memory; returns it loaded (mmap).

    Keys are written to disk batch by batch (see the module docstring); an interrupted build resumes where
    it stopped when called again with the same chunks, model and format. ``path`` may hold a datastore
    already: it is replaced atomically when the build completes (a rebuild), and stays loadable until then.

    Args:
        path: the datastore directory (created).
        lm: the model (its dtype decides the keys: bfloat16 builds ~3× faster than float32 on a CPU with bf16).
        chunks: the chunks to index; documents: the original documents, kept for citations' line numbers.
        key_format: ``auto`` (default: :meth:`KeyFormat.auto <nest_integrations.store.KeyFormat.auto>`, product
            quantisation with D/3 codes a token, float16 under 10,000 tokens) | ``float16`` | ``int8`` | ``pq<M>``.
        max_tokens: refuse corpora with more tokens than this, before computing any key (default:
            ``DEFAULT_MAX_STREAMED_TOKENS``, 50M; the datastore returned keeps it as its cap for in-memory adds,
            ``DEFAULT_MAX_TOKENS`` when not given).
        batch_tokens: padded tokens per forward batch (part of the plan: changing it restarts the build).
        progress: a progress bar with tokens/s and ETA.

    Raises:
        EmptyCorpusError / DuplicateIdError: bad chunks. DatastoreError: too many tokens, unwritable directory
            (a full disk included: the error names the file; the staging keeps what was committed).
        PromptTooLongError: a chunk longer than the model's context window.
    """
    chunk_list = validate_chunks(chunks)
    load_cap = max_tokens or DEFAULT_MAX_TOKENS
    max_tokens = max_tokens or DEFAULT_MAX_STREAMED_TOKENS
    auto = isinstance(key_format, str) and key_format.strip().lower() == AUTO_KEY_FORMAT
    fmt = KeyFormat("float16") if auto else KeyFormat.parse(key_format)
    store = Datastore(lm, chunk_list, key_layer=key_layer, max_tokens=max_tokens, documents=documents, key_format=fmt)
    store._check_budget_chars(chunk_list)
    root = Path(path)
    enc = store.encoder
    enc.batch_tokens = batch_tokens
    toks = []
    n_tokens = 0
    for c in chunk_list:
        ids, offs = enc.tokenize(c.text)
        if len(ids) > lm.context_window:
            raise PromptTooLongError(
                f"chunk {c.chunk_id!r} has {len(ids)} tokens, more than the model's context window "
                f"({lm.context_window}); split documents into smaller chunks"
            )
        n_tokens += len(ids)
        if n_tokens > max_tokens:
            raise store._too_many_tokens()
        toks.append((ids, offs))
    batches = enc.batches(toks)
    if _on_event:
        _on_event("tokenized", len(batches))
    dim = lm.hidden_size
    if auto:
        fmt = store.key_format = KeyFormat.auto(dim, n_tokens)
    stage_fmt = KeyFormat.parse("float16") if fmt.is_pq else fmt
    plan = {"plan_id": _plan_id(store, fmt, batch_tokens, chunk_list), "n_tokens": n_tokens, "n_batches": len(batches)}
    try:
        root.mkdir(parents=True, exist_ok=True)
        stage = root / STAGING_DIR
        old_plan = _read_json(stage / "plan.json")
        state = _read_json(stage / "progress.json") if old_plan == plan else None
        if state is None:
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir()
            order = [i for b in batches for i in b]
            ids_all = np.concatenate([toks[i][0] for i in order]) if order else np.zeros(0, np.int32)
            offs_all = np.concatenate([toks[i][1] for i in order]) if order else np.zeros((0, 2), np.int32)
            persist._save_npy(stage / "token_ids.npy", ids_all.astype(np.int32))
            persist._save_npy(stage / "offsets.npy", offs_all.astype(np.int32).reshape(-1, 2))
            del ids_all, offs_all
            _write_json(stage / "plan.json", plan)
            state = {"batches": 0, "rows": 0}
            _write_json(stage / "progress.json", state)
        _stream_keys(stage, store, toks, batches, stage_fmt, n_tokens, state, progress, _on_event)
        if _on_event:
            _on_event("keys", len(batches))
        if not (stage / "passages.npy").exists():
            emb = _embed_passages([c.text for c in chunk_list])  # trims the heap when done
            persist._save_npy(stage / "passages.npy.tmp", emb)
            os.replace(stage / "passages.npy.tmp", stage / "passages.npy")
            if _on_event:
                _on_event("passages", 0)
        key_files = {f"{name}.npy": stage / f"{name}.npy" for name in stage_fmt.row_arrays(dim)}
        if fmt.is_pq:
            fmt, key_files = _quantise_staged(stage, fmt, n_tokens, dim, _on_event)
        # chunk rows point at their keys' range in batch order
        starts = np.zeros(len(chunk_list), dtype=np.int64)
        pos = 0
        for b in batches:
            for i in b:
                starts[i] = pos
                pos += len(toks[i][0])
        rows = [chunk_row(c, int(starts[i]), len(toks[i][0])) for i, c in enumerate(chunk_list)]
        staged = dict(key_files)
        staged.update({n: stage / n for n in ("token_ids.npy", "offsets.npy", "passages.npy")})
        manifest = store.manifest(fmt, n_tokens)
        manifest["build"] = {"streamed": True, "batch_tokens": batch_tokens, "batches": len(batches)}
        persist.write_generation(root, manifest, rows, {}, store.document_rows(), staged_files=staged)
        shutil.rmtree(stage, ignore_errors=True)
    except OSError as e:
        raise DatastoreError(
            f"{root}: cannot write the datastore ({e.strerror or e}{': ' + e.filename if e.filename else ''}); "
            "free disk space or choose another directory, then run the same build again to resume it"
        ) from None
    return Datastore.load(root, lm, max_tokens=load_cap)


def _stream_keys(
    stage: Path,
    store: Datastore,
    toks: Sequence[tuple[np.ndarray, np.ndarray]],
    batches: Sequence[Sequence[int]],
    fmt: KeyFormat,
    n_tokens: int,
    state: dict[str, int],
    progress: bool,
    on_event: Callable[[str, int], None] | None,
) -> None:
    """Encode the batches not yet committed and append their keys to the staging key files."""
    if state["batches"] >= len(batches):
        return
    dim = store.lm.hidden_size
    files = {
        name: _RowFile(stage / f"{name}.npy", dt, n_tokens, shape) for name, (dt, shape) in fmt.row_arrays(dim).items()
    }
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_tokens, initial=state["rows"], unit="tok", unit_scale=True, desc="token keys")
    try:
        for f in files.values():
            f.open(state["rows"])
        rows = state["rows"]
        for b in range(state["batches"], len(batches)):
            keys = store.encoder.encode_batch(batches[b], toks)
            enc = fmt.encode(np.concatenate(keys) if keys else np.zeros((0, dim), np.float16))
            for name, f in files.items():
                f.append(enc[name])
            n_rows = sum(len(k) for k in keys)
            rows += n_rows
            del keys, enc
            release_free_memory()
            if on_event:
                on_event("batch-written", b)
            for f in files.values():
                f.sync()
            state = {"batches": b + 1, "rows": rows}
            _write_json(stage / "progress.json", state)
            if on_event:
                on_event("batch-committed", b)
            if bar is not None:
                bar.update(n_rows)
    finally:
        for f in files.values():
            f.close()
        if bar is not None:
            bar.close()


def _quantise_staged(
    stage: Path, fmt: KeyFormat, n_tokens: int, dim: int, on_event: Callable[[str, int], None] | None
) -> tuple[KeyFormat, dict[str, Path]]:
    """Train ``fmt``'s codebook on a sample of the staged float16 keys and write ``pq_codes.npy`` block by block.

    Rows are read with explicit reads (no memory map), so memory stays at one block plus the sample.
    """
    src = stage / "keys.npy"
    row_bytes = 2 * dim
    with src.open("rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        start = f.tell()
        want = KeyFormat.training_rows(n_tokens)
        sample = np.empty((len(want), dim), dtype=np.float32)
        for j, r in enumerate(want):
            f.seek(start + int(r) * row_bytes)
            sample[j] = np.frombuffer(f.read(row_bytes), dtype=np.float16)
        trained = fmt.train(sample)
        del sample
        assert trained.centroids is not None
        persist._save_npy(stage / "pq_centroids.npy", trained.centroids)
        if on_event:
            on_event("pq-trained", 0)
        out = _RowFile(stage / "pq_codes.npy", np.dtype(np.uint8), n_tokens, (fmt.m,))
        out.open(0)
        f.seek(start)
        try:
            for s in range(0, n_tokens, _BLOCK_ROWS):
                n = min(_BLOCK_ROWS, n_tokens - s)
                block = np.frombuffer(f.read(n * row_bytes), dtype=np.float16).reshape(n, dim)
                out.append(trained.encode(block)["pq_codes"])
            out.sync()
        finally:
            out.close()
    return trained, {"pq_codes.npy": stage / "pq_codes.npy", "pq_centroids.npy": stage / "pq_centroids.npy"}
