"""Model fingerprints (what a datastore must match): weight files, fine-tunes, earlier datastores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nest_integrations import Datastore
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import DatastoreError
from nest_integrations.models import LoadedModel, load_model, weight_files


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _saved(tiny_lm, root: Path, bump: float = 0.0) -> LoadedModel:
    """Save the tiny model (with one value of the LAST layer changed by ``bump``) and load it back."""
    model = tiny_lm.model
    w = model.model.layers[-1].mlp.down_proj.weight
    with torch.no_grad():
        w[-1, -1] += bump
    try:
        model.save_pretrained(str(root))
        tiny_lm.tokenizer.save_pretrained(str(root))
    finally:
        with torch.no_grad():
            w[-1, -1] -= bump
    return load_model(root)


def test_weight_file_hash_tells_fine_tunes_apart(tiny_lm, tmp_path: Path, cache: Path) -> None:
    a = _saved(tiny_lm, tmp_path / "a")
    b = _saved(tiny_lm, tmp_path / "b", bump=1e-3)  # a change far from the first values of the first tensors
    fa, fb = a.fingerprint(), b.fingerprint()
    assert fa["weights_hash_kind"] == fb["weights_hash_kind"] == "files-sha256"
    assert weight_files(tmp_path / "a") and fa["weights_hash"] != fb["weights_hash"]
    # the hash of earlier builds (4 tensors x 4,096 values) could not tell them apart
    assert a.fingerprint("sample-4x4096")["weights_hash"] == b.fingerprint("sample-4x4096")["weights_hash"]
    # the same files hash the same, from the cache the second time
    assert _saved(tiny_lm, tmp_path / "a2").fingerprint()["weights_hash"] == fa["weights_hash"]
    assert (cache / "weights-hashes.json").is_file()


def test_in_memory_model_hashes_every_tensor(tiny_lm) -> None:
    fp = tiny_lm.fingerprint()
    assert fp["weights_hash_kind"] == "state-sha256"
    w = tiny_lm.model.model.layers[-1].mlp.down_proj.weight
    with torch.no_grad():
        w[-1, -1] += 1e-3
    try:
        assert tiny_lm.fingerprint()["weights_hash"] != fp["weights_hash"]
    finally:
        with torch.no_grad():
            w[-1, -1] -= 1e-3
    assert tiny_lm.fingerprint() == fp


def test_datastore_of_an_earlier_build_still_loads_and_is_still_checked(tiny_lm, tmp_path: Path, cache: Path) -> None:
    lm = _saved(tiny_lm, tmp_path / "m")
    root = Datastore.from_documents(load_demo_documents()[:1], lm, chunk_size=400, progress=False).save(tmp_path / "s")
    man_path = root / "manifest.json"
    man = json.loads(man_path.read_text())
    assert man["fingerprint"]["weights_hash_kind"] == "files-sha256"
    # rewrite the manifest as an earlier build wrote it: no kind, the sampled hash
    legacy = lm.fingerprint("sample-4x4096")
    man["fingerprint"] = {k: v for k, v in man["fingerprint"].items() if k != "weights_hash_kind"}
    man["fingerprint"]["weights_hash"] = legacy["weights_hash"]
    man_path.write_text(json.dumps(man))
    assert len(Datastore.load(root, lm)) == len(Datastore.load(tmp_path / "s", lm))
    man["fingerprint"]["weights_hash"] = "0" * 16
    man_path.write_text(json.dumps(man))
    with pytest.raises(DatastoreError, match="another model"):
        Datastore.load(root, lm)
