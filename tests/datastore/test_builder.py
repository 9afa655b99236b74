"""The streamed build: same datastore as the in-memory build, killed builds resume to an identical datastore,
a full disk is a typed error that keeps what was committed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nest_integrations.chunks import chunks_from_documents
from nest_integrations.datastore import Datastore, build_on_disk, has_datastore
from nest_integrations.datastore.builder import STAGING_DIR, _RowFile
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import DatastoreError

TESTS = Path(__file__).resolve().parents[1]
BATCH = 1024  # small batches: many commit points in a small corpus


def _corpus():
    docs = load_demo_documents()
    return docs, chunks_from_documents(docs, chunk_size=400)


def _files(root: Path) -> dict[str, str]:
    man = json.loads((root / "manifest.json").read_text())
    return {k: v["sha256"] for k, v in man["files"].items()}


def test_streamed_equals_in_memory_build(tiny_lm, tmp_path: Path) -> None:
    docs, chunks = _corpus()
    ref = Datastore.build(tiny_lm, chunks, documents=docs, progress=False)
    ref.encoder.batch_tokens = BATCH
    got = build_on_disk(tmp_path / "s", tiny_lm, chunks, documents=docs, batch_tokens=BATCH, progress=False)
    assert got.chunks == ref.chunks and got.n_tokens == ref.n_tokens
    assert set(got.documents) == set(ref.documents)
    for i in range(len(ref)):
        a, b = ref.keys_of(i), got.keys_of(i)
        assert np.array_equal(a.token_ids, b.token_ids) and np.array_equal(a.offsets, b.offsets)
        # the same chunk in another batch shape: equal up to float rounding of the padded matmuls
        assert np.allclose(np.asarray(a.keys, np.float32), np.asarray(b.keys, np.float32), atol=2e-2)
    assert not (tmp_path / "s" / STAGING_DIR).exists()
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["build"]["streamed"] and man["n_tokens"] == ref.n_tokens


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_lm
    from nest_integrations.chunks import chunks_from_documents
    from nest_integrations.datastore import build_on_disk
    from nest_integrations.demo import load_demo_documents

    def kill(event, n):
        if event == {event!r} and n == {n}:
            os.kill(os.getpid(), signal.SIGKILL)

    docs = load_demo_documents()
    build_on_disk({path!r}, make_tiny_lm(), chunks_from_documents(docs, chunk_size=400), documents=docs,
                  key_format={fmt!r}, batch_tokens={batch}, progress=False, _on_event=kill)
    """
)


@pytest.mark.parametrize(
    "event, n, fmt",
    [
        ("batch-written", 1, "float16"),
        ("batch-committed", 4, "int8"),
        ("passages", 0, "float16"),
        ("pq-trained", 0, "pq16"),
    ],
)
def test_killed_build_resumes_to_the_same_datastore(tiny_lm, tmp_path: Path, event: str, n: int, fmt: str) -> None:
    docs, chunks = _corpus()
    ref = tmp_path / "ref"
    build_on_disk(ref, tiny_lm, chunks, documents=docs, key_format=fmt, batch_tokens=BATCH, progress=False)
    path = tmp_path / "killed"
    script = _KILL_SCRIPT.format(tests=str(TESTS), event=event, n=n, path=str(path), fmt=fmt, batch=BATCH)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not has_datastore(path)  # nothing half-written is loadable
    with pytest.raises(DatastoreError, match="not a datastore"):
        Datastore.load(path, tiny_lm)
    committed = json.loads((path / STAGING_DIR / "progress.json").read_text())["batches"]
    assert committed >= (n if event == "batch-written" else n + 1 if event == "batch-committed" else 1)
    seen: list[int] = []
    build_on_disk(
        path,
        tiny_lm,
        chunks,
        documents=docs,
        key_format=fmt,
        batch_tokens=BATCH,
        progress=False,
        _on_event=lambda e, k: seen.append(k) if e == "batch-committed" else None,
    )
    assert not seen or seen[0] == committed  # resumed after the committed batches, did not start over
    assert _files(path) == _files(ref)  # byte-identical files


def test_other_chunks_restart_the_build(tiny_lm, tmp_path: Path) -> None:
    docs, chunks = _corpus()
    stops: list[int] = []

    def stop(event: str, k: int) -> None:
        if event == "batch-committed" and k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_on_disk(tmp_path / "s", tiny_lm, chunks, batch_tokens=BATCH, progress=False, _on_event=stop)
    fewer = [c for c in chunks if c.doc_id != chunks[0].doc_id]
    build_on_disk(
        tmp_path / "s",
        tiny_lm,
        fewer,
        batch_tokens=BATCH,
        progress=False,
        _on_event=lambda e, k: stops.append(k) if e == "batch-committed" else None,
    )
    assert stops[0] == 0  # a different corpus is a different plan: started over
    assert len(Datastore.load(tmp_path / "s", tiny_lm)) == len(fewer)


def test_full_disk_is_a_typed_error_and_resumes(tiny_lm, tmp_path: Path, monkeypatch) -> None:
    docs, chunks = _corpus()
    real_append = _RowFile.append
    calls = {"n": 0}

    def append(self, rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real_append(self, rows)

    monkeypatch.setattr(_RowFile, "append", append)
    with pytest.raises(DatastoreError, match="No space left on device.*resume"):
        build_on_disk(tmp_path / "s", tiny_lm, chunks, documents=docs, batch_tokens=BATCH, progress=False)
    assert not has_datastore(tmp_path / "s")
    monkeypatch.setattr(_RowFile, "append", real_append)
    store = build_on_disk(tmp_path / "s", tiny_lm, chunks, documents=docs, batch_tokens=BATCH, progress=False)
    ref = build_on_disk(tmp_path / "ref", tiny_lm, chunks, documents=docs, batch_tokens=BATCH, progress=False)
    assert _files(tmp_path / "s") == _files(tmp_path / "ref") and len(store) == len(ref)


def test_rebuild_keeps_the_old_datastore_until_done(tiny_lm, tmp_path: Path) -> None:
    docs, chunks = _corpus()
    root = tmp_path / "s"
    build_on_disk(root, tiny_lm, chunks[:3], batch_tokens=BATCH, progress=False)

    def stop(event: str, k: int) -> None:
        if event == "batch-committed" and k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_on_disk(root, tiny_lm, chunks, batch_tokens=BATCH, progress=False, _on_event=stop)
    assert len(Datastore.load(root, tiny_lm)) == 3  # the previous datastore still loads
    assert len(build_on_disk(root, tiny_lm, chunks, batch_tokens=BATCH, progress=False)) == len(chunks)


def test_budget_checked_before_any_key(tiny_lm, tmp_path: Path) -> None:
    _, chunks = _corpus()
    with pytest.raises(DatastoreError, match="before computing keys"):
        build_on_disk(tmp_path / "s", tiny_lm, chunks, max_tokens=100, progress=False)
    assert not (tmp_path / "s").exists()
