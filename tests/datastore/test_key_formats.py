"""Datastores in each key format: save / load / re-save, manifest, size on disk, decoding at request time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nest_integrations.chunks import chunks_from_documents
from nest_integrations.config import NestConfig
from nest_integrations.datastore import Datastore
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import ConfigError, DatastoreError
from nest_integrations.store import EncodedKeys


@pytest.fixture(scope="module")
def store(tiny_lm) -> Datastore:
    return Datastore.from_documents(load_demo_documents()[:3], tiny_lm, chunk_size=400, progress=False)


def _dense(s: Datastore) -> np.ndarray:
    return np.concatenate([np.asarray(s.keys_of(i).keys[:], dtype=np.float32) for i in range(len(s))])


def _key_bytes(root: Path) -> int:
    man = json.loads((root / "manifest.json").read_text())
    return sum(v["bytes"] for k, v in man["files"].items() if k.startswith(("keys", "key_", "pq_")))


@pytest.mark.parametrize("spec, tol", [("int8", 0.02), ("pq16", 0.6)])
def test_save_load_compact(store: Datastore, tiny_lm, tmp_path: Path, spec: str, tol: float) -> None:
    ref = _dense(store)
    store.save(tmp_path / "f16")
    root = store.save(tmp_path / spec, key_format=spec)
    man = json.loads((root / "manifest.json").read_text())
    assert man["key_format"]["name"] == spec and man["format_version"] == 2
    loaded = Datastore.load(root, tiny_lm)
    assert loaded.key_format.name == spec and loaded.key_format.trained
    assert isinstance(loaded.keys_of(0).keys, EncodedKeys)
    got = _dense(loaded)
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) < tol * float(np.abs(ref).max())
    assert _key_bytes(root) < _key_bytes(tmp_path / "f16") / (1.9 if spec == "int8" else 3.5)
    # a request gathers decoded float32 keys; the engine decodes from the compact store
    view = loaded.token_store.request_view([0, 1], [c.text for c in loaded.chunks[:2]])
    n0 = loaded.keys_of(0).n_entries
    assert view.keys.dtype.is_floating_point and np.allclose(view.keys[:n0].numpy(), got[:n0])
    out = loaded.engine(NestConfig.lossless(max_new_tokens=6)).generate("Who performed at Super Bowl 50?")
    assert out.stats.forward_passes == 6 and out.passages
    assert store.key_format.name == "float16"  # saving in another format leaves the store's own format
    # re-saving a loaded compact store copies its codes: no second quantisation
    again = Datastore.load(loaded.save(tmp_path / "again"), tiny_lm)
    assert np.array_equal(_dense(again), got)


def test_old_float16_manifest_still_loads(store: Datastore, tiny_lm, tmp_path: Path) -> None:
    root = store.save(tmp_path / "s")
    man = json.loads((root / "manifest.json").read_text())
    assert man["key_format"] == {"name": "float16"} and man["format_version"] == 1
    del man["key_format"]  # as written before key formats existed
    (root / "manifest.json").write_text(json.dumps(man))
    loaded = Datastore.load(root, tiny_lm)
    assert loaded.key_format.name == "float16" and np.array_equal(_dense(loaded), _dense(store))


def test_added_chunks_are_encoded_in_the_stores_format(store: Datastore, tiny_lm, tmp_path: Path) -> None:
    loaded = Datastore.load(store.save(tmp_path / "pq", key_format="pq16"), tiny_lm)
    assert loaded.key_format.name == "pq16" and store.key_format.name == "float16"
    extra = load_demo_documents()[3:4]
    loaded.add(chunks_from_documents(extra, chunk_size=400), documents=extra)
    again = Datastore.load(loaded.save(tmp_path / "pq"), tiny_lm)
    assert again.key_format.name == "pq16" and len(again) == len(loaded)
    assert np.array_equal(again.key_format.centroids, loaded.key_format.centroids)  # same codebook kept


def test_bad_formats(store: Datastore, tiny_lm, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key format"):
        store.save(tmp_path / "x", key_format="int4")
    with pytest.raises(ConfigError, match="do not divide"):
        store.save(tmp_path / "x", key_format="pq48")
    assert not (tmp_path / "x" / "manifest.json").exists()
    root = store.save(tmp_path / "pq", key_format="pq16")
    man = json.loads((root / "manifest.json").read_text())
    man["key_format"]["name"] = "pq8"  # the codebook on disk is for 16 sub-quantisers
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DatastoreError, match="codebook"):
        Datastore.load(root, tiny_lm, verify=False)
