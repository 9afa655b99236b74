"""Shared by the ``nest`` command-line tests: running the CLI as a subprocess and checking its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nest_integrations
from nest_integrations.models import default_model_dir

SPAN_FIELDS = {
    "text",
    "doc_id",
    "chunk_id",
    "source",
    "doc_start",
    "doc_end",
    "response_start",
    "response_end",
    "n_tokens",
}


DEMO_FILE = Path(nest_integrations.__file__).parent / "data" / "demo_corpus.jsonl"


SAMPLE_FILE = DEMO_FILE.parent / "sample_questions.jsonl"


REPO = Path(__file__).resolve().parents[2]


SUPPORT_LABELS = {"copied", "grounded", "unsupported"}


def has_default_model() -> bool:
    """True when the converted default model is in the cache."""
    d = default_model_dir()
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


needs_model = pytest.mark.skipif(
    not has_default_model(), reason="default model not in the cache (run `nest download-model`)"
)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nest_integrations.cli ARGS`` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if k != "NEST_DEBUG"}
    full_env.update({"NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"})
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nest_integrations.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=full_env,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nest: error: "), proc.stderr
    return lines[0]


def demo_texts_from_file() -> dict[str, str]:
    """The demo documents, read independently of the package code."""
    out = {}
    for line in DEMO_FILE.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["id"]] = rec["text"]
    return out


def check_spans(payload: dict[str, Any], doc_texts: dict[str, str]) -> None:
    """Every span has the §8 fields and is exact both in the response and in its document."""
    response = payload["text"]
    for span in payload["spans"]:
        assert SPAN_FIELDS <= set(span), span
        assert span["text"] == response[span["response_start"] : span["response_end"]]
        assert span["text"] == doc_texts[span["doc_id"]][span["doc_start"] : span["doc_end"]]
        assert span["n_tokens"] >= 2
        assert span["chunk_id"].startswith(span["doc_id"] + "#")


def check_sentences(payload: dict[str, Any]) -> None:
    """Support labels in the JSON: §10 fields, in order inside the text, chunks among the passages;
    ``truncated`` agrees with ``finish_reason``."""
    assert payload["truncated"] == (payload["finish_reason"] == "length")
    assert payload["sentences"], "no sentence labels"
    passages = {p["chunk_id"] for p in payload["passages"]}
    pos = 0
    for s in payload["sentences"]:
        assert set(s) == {"response_start", "response_end", "support", "chunk_ids"}
        assert pos <= s["response_start"] < s["response_end"] <= len(payload["text"])
        pos = s["response_end"]
        assert s["support"] in SUPPORT_LABELS
        assert set(s["chunk_ids"]) <= passages
        assert (len(s["chunk_ids"]) == 1) == (s["support"] != "unsupported")
