"""Shared fixtures: the real default model (loaded once) and a tiny random model for structural tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nest_integrations.models import default_model_dir, load_model

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data_dir() -> Path | None:
    """The dev data folder: $NEST_SHARED_DATA, else <repo>/../shared/data."""
    env = os.environ.get("NEST_SHARED_DATA")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in cands:
        if c.is_dir():
            return c
    return None


def _require_default_model() -> None:
    if not (default_model_dir() / "config.json").is_file():
        if os.environ.get("CI"):
            pytest.fail("the default model is missing in CI: .ci/run must run `nest download-model`")
        pytest.skip("default model not downloaded (run `nest download-model`)")


@pytest.fixture(scope="session")
def default_lm():
    """SmolLM2-135M-Instruct, float32, shared by the whole session."""
    _require_default_model()
    return load_model(dtype="float32", device="cpu")


def make_tiny_lm(seed: int = 0):
    """A 2-layer randomly initialised Llama (weights from ``seed``) with the default model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from nest_integrations.models import LoadedModel

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).eval()
    name = "tiny-random-llama" if seed == 0 else f"tiny-random-llama-{seed}"
    return LoadedModel(model=model, tokenizer=tok, model_id=name, path=Path("."), dtype="float32")


@pytest.fixture(scope="session")
def tiny_lm():
    """A 2-layer randomly initialised Llama with the default model's tokenizer (structure tests only)."""
    _require_default_model()
    return make_tiny_lm()


@pytest.fixture(scope="session")
def squad():
    """(documents, questions) of squad-dev200, or skip when the dev data is absent."""
    import json

    from nest_integrations import Document

    d = shared_data_dir()
    if d is None:
        pytest.skip("dev data (../shared/data) not available")
    docs = [
        Document(r["id"], r["text"], {"title": r["title"]})
        for r in map(json.loads, (d / "squad-dev200" / "corpus.jsonl").open())
    ]
    qs = [json.loads(line) for line in (d / "squad-dev200" / "questions.jsonl").open()]
    return docs, qs
