"""On-disk format of a datastore directory (no pickle; atomic saves; checked loads).

Layout::

    DIR/
      manifest.json          points at the current generation; replaced atomically (os.replace)
      gen-000003/
        chunks.jsonl         one chunk per line: chunk_id, doc_id, doc_offset, text, metadata, token range
        documents.jsonl      the original documents (doc_id, text, metadata), when the store has them
        token_ids.npy        (N,) int32   all chunks' tokens, concatenated in chunk order
        offsets.npy          (N, 2) int32 character range of each token in its chunk text
        keys.npy             (N, D) float16 hidden states (layer ``key_layer``); memory-mapped on load —
                             or, in a compact key format (manifest ``key_format``, format version 2),
                             keys_int8.npy (N, D) int8 + key_scales.npy (N,) float16, or
                             pq_codes.npy (N, M) uint8 + pq_centroids.npy (M, 256, D/M) float32
        passages.npy         (C, E) float32 passage-embedding of each chunk (dense retriever), optional

A save writes a complete new generation folder, fsyncs it, then replaces ``manifest.json``; only then
is the previous generation deleted. A crash at any point leaves a manifest that names a complete
generation, so the previous datastore stays loadable. Every file's size and SHA-256 are in the
manifest and are checked on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nest_integrations.errors import DatastoreError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "write_generation", "read_manifest", "open_array", "read_chunk_table"]

FORMAT_NAME = "nest-datastore"
#: the newest format this library reads and writes: 1 = float16 keys (keys.npy); 2 = compact keys (int8 or
#: product quantisation: keys_int8.npy + key_scales.npy, or pq_codes.npy + pq_centroids.npy; manifest "key_format")
FORMAT_VERSION = 2
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def write_generation(
    root: Path,
    manifest: dict[str, Any],
    chunk_rows: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    document_rows: list[dict[str, Any]] | None = None,
    fail_after: str | None = None,
    staged_files: dict[str, Path] | None = None,
) -> Path:
    """Write a new generation under ``root`` and switch ``manifest.json`` to it; returns its folder.

    ``staged_files``: files already written (complete and fsynced) elsewhere on the same disk, by name —
    the streamed build's key files —, hard-linked into the generation (copied where links are refused), so
    a failure here leaves them where they were. ``fail_after`` (testing only) raises right after writing
    that file, to simulate a crash midway.
    """
    root.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name[4:]) for p in root.glob("gen-*") if p.name[4:].isdigit()]
    gen = max(existing, default=0) + 1
    name = f"gen-{gen:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        files: dict[str, dict[str, Any]] = {}
        for fname, table_rows in (("chunks.jsonl", chunk_rows), ("documents.jsonl", document_rows or [])):
            with (tmp / fname).open("w", encoding="utf-8", newline="\n") as f:
                for row in table_rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if fail_after == "chunks.jsonl":
            raise RuntimeError("simulated crash")
        for fname, arr in arrays.items():
            _save_npy(tmp / fname, arr)
            if fail_after == fname:
                raise RuntimeError("simulated crash")
        for fname, src in (staged_files or {}).items():
            try:
                os.link(src, tmp / fname)
            except OSError:
                shutil.copyfile(src, tmp / fname)
        for p in sorted(tmp.iterdir()):
            files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        _fsync_dir(tmp)
        os.replace(tmp, root / name)
        _fsync_dir(root)
        if fail_after == "generation":
            raise RuntimeError("simulated crash")
        version = int(manifest.get("format_version", FORMAT_VERSION))
        man = dict(manifest, format=FORMAT_NAME, format_version=version, generation=name, files=files)
        fd, tmp_manifest = tempfile.mkstemp(dir=root, prefix=".manifest.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(man, f, indent=1, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_manifest, root / MANIFEST)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the new generation is live: remove older ones and leftovers of interrupted saves
    for p in root.iterdir():
        if p.name == name or p.name == MANIFEST:
            continue
        if p.name.startswith("gen-") or p.name.startswith(".gen-") or p.name.startswith(".manifest."):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    return root / name


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the datastore at ``root``, with its format checked.

    Raises:
        DatastoreError: no datastore there, unreadable manifest, another format, or a newer version.
    """
    path = root / MANIFEST
    if not root.is_dir():
        raise DatastoreError(f"{root}: no such datastore directory")
    if not path.is_file():
        raise DatastoreError(f"{root}: not a datastore (no {MANIFEST}); build one with `nest index`")
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatastoreError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise DatastoreError(f"{path}: not a {FORMAT_NAME} manifest")
    version = man.get("format_version")
    if not isinstance(version, int):
        raise DatastoreError(f"{path}: missing format_version")
    if version > FORMAT_VERSION:
        raise DatastoreError(
            f"{root}: datastore format version {version} is newer than this nest-integrations supports "
            f"({FORMAT_VERSION}); upgrade nest-integrations"
        )
    return man


def _check_file(root: Path, man: dict[str, Any], fname: str, verify: bool) -> Path:
    gen = root / str(man["generation"])
    path = gen / fname
    info = man.get("files", {}).get(fname)
    if info is None:
        raise DatastoreError(f"{root}: manifest lists no {fname}")
    if not path.is_file():
        raise DatastoreError(f"{path}: file missing (damaged datastore)")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise DatastoreError(
            f"{path}: {size} bytes, the manifest says {info['bytes']} (truncated or damaged file); rebuild the datastore"
        )
    if verify and _sha256(path) != info["sha256"]:
        raise DatastoreError(f"{path}: checksum mismatch (damaged file); rebuild the datastore")
    return path


def open_array(root: Path, man: dict[str, Any], fname: str, *, mmap: bool, verify: bool) -> np.ndarray:
    """A checked ``.npy`` array of the current generation (memory-mapped when ``mmap``)."""
    path = _check_file(root, man, fname, verify)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DatastoreError(f"{path}: unreadable array ({e})") from None


def read_chunk_table(
    root: Path, man: dict[str, Any], *, verify: bool, fname: str = "chunks.jsonl"
) -> list[dict[str, Any]]:
    """The rows of a JSON Lines table (``chunks.jsonl``, ``documents.jsonl``) of the current generation."""
    path = _check_file(root, man, fname, verify)
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise DatastoreError(f"{path}:{n}: damaged table") from None
    return rows
