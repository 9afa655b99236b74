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
    return load_model(root, dtype="float32")


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


# ---- the per-device default dtype (issue 12) ---------------------------------------------------------


def test_auto_dtype_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import nest_integrations.models as models

    monkeypatch.setattr(models, "_cpu_has_native_bf16", lambda: True)
    assert models.resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(models, "_cpu_has_native_bf16", lambda: False)
    assert models.resolve_dtype("auto", "cpu") == "float32"
    assert models.resolve_dtype(None, "cpu") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert models.resolve_dtype("auto", "cuda:1") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert models.resolve_dtype("auto", "cuda") == "float16"
    assert models.resolve_device("auto") == "cuda"
    assert models.resolve_dtype("float32", "cuda") == "float32"  # an explicit choice is kept


def test_cpu_bf16_detection_reads_the_cpu_flags() -> None:
    import nest_integrations.models as models

    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags here")
    assert models._cpu_has_native_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def test_unknown_dtype_is_a_clear_error() -> None:
    from nest_integrations.errors import NestError
    from nest_integrations.models import resolve_dtype

    with pytest.raises(NestError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")
    with pytest.raises(NestError, match="unknown dtype"):
        load_model(dtype="half")  # type: ignore[arg-type]


def test_device_map_without_accelerate_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tiny_lm, tmp_path) -> None:
    import builtins

    from nest_integrations.errors import NestError

    tiny_lm.model.save_pretrained(str(tmp_path / "m"))
    tiny_lm.tokenizer.save_pretrained(str(tmp_path / "m"))
    real_import = builtins.__import__

    def no_accelerate(name, *a, **k):
        if name == "accelerate":
            raise ImportError("no accelerate")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_accelerate)
    with pytest.raises(NestError, match="pip install accelerate"):
        load_model(tmp_path / "m", device_map="auto")


def test_device_map_auto_loads_and_decodes(tiny_lm, tmp_path) -> None:
    """``device_map="auto"`` (accelerate) on a CPU-only machine puts everything on the CPU and decodes as usual."""
    pytest.importorskip("accelerate")
    from nest_integrations import Document, NestConfig, NestEngine
    from nest_integrations.chunks import chunks_from_documents

    tiny_lm.model.save_pretrained(str(tmp_path / "m"))
    tiny_lm.tokenizer.save_pretrained(str(tmp_path / "m"))
    lm = load_model(tmp_path / "m", dtype="float32", device_map="auto")
    assert lm.dtype == "float32" and str(lm.device) == "cpu"
    docs = [Document("a", "The river bank is near the old town bridge, north of the market.")]
    cfg = NestConfig(max_new_tokens=8, abstain="off", retriever="bm25")
    a = NestEngine(lm, chunks_from_documents(docs), cfg).generate("Where is the river bank?")
    b = NestEngine(tiny_lm, chunks_from_documents(docs), cfg).generate("Where is the river bank?")
    assert a.token_ids == b.token_ids and a.text == b.text
