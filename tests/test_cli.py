"""The ``nest`` command line, run as a subprocess (plus a few fast in-process checks).

Runs that need the real default model are skipped when it is not in the cache
(``nest download-model`` fetches it); they use small ``--max-new-tokens`` budgets. The terminal,
``--json`` and chat output paths are also checked with a fake engine that returns hand-built
results (support labels, truncation, abstention), so they are tested without a model.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import nest_integrations
from nest_integrations.attribution import CopiedSpan
from nest_integrations.cli import _build_config, _key_value, main
from nest_integrations.config import NestConfig
from nest_integrations.demo import load_demo_documents, load_sample_questions
from nest_integrations.engine import GenerationStats, NestDelta, NestResult
from nest_integrations.errors import ConfigError
from nest_integrations.models import default_model_dir
from nest_integrations.render import line_number, mark_answer, render_answer, render_sources, render_stats

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
REPO = Path(__file__).resolve().parents[1]
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


# ---------------------------------------------------------------------------------------------
# help and usage errors (no model needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["ask"], ["download-model"]])
def test_help_subprocess(command: list[str]) -> None:
    proc = run_cli(*command, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: nest" + (" " + command[0] if command else ""))
    if command == ["ask"]:
        for option in (
            "--docs",
            "--model",
            "--dtype",
            "--method",
            "--max-new-tokens",
            "--set",
            "--json",
            "--no-stream",
        ):
            assert option in proc.stdout
    if not command:
        assert "download-model" in proc.stdout and "ask" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "missing command"),
        (["bogus"], "invalid choice"),
        (["ask"], "QUESTION"),
        (["ask", "q", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["ask", "q", "--max-new-tokens", "many"], "--max-new-tokens"),
        (["ask", "q", "--method", "magic"], "--method"),
        (["ask", "q", "--dtype", "int3"], "--dtype"),
        (["ask", "q", "--set", "alpha"], "KEY=VALUE"),
        (["ask", "q", "--set", "no_such_key=1"], "unknown config key 'no_such_key'"),
        (["ask", "q", "--set", "alpha=7"], "alpha"),
        (["ask", "q", "--set", "retriever=magic"], "retriever"),
        (["ask", "q", "--bogus-flag"], "unrecognized arguments"),
        (["ask", "q", "--abstain", "sometimes"], "--abstain"),
        (["chat", "--abstain", "never"], "--abstain"),
        (["eval"], "give --questions FILE"),
        (["eval", "--sample", "--questions", "q.jsonl"], "--sample uses the sample questions"),
        (["eval", "--sample", "--corpus", "c.jsonl"], "--sample uses the sample questions"),
        (["ask", ""], "the question is empty"),
        (["ask", "   \n "], "the question is empty"),
    ],
)
def test_bad_usage_in_process(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nest: error: "), captured.err
    assert expected in lines[0]
    assert captured.out == ""


def test_bad_arguments_subprocess() -> None:
    line = assert_one_line_error(run_cli("ask", "q", "--max-new-tokens", "-3", timeout=120))
    assert "--max-new-tokens" in line and "nest ask --help" in line
    line = assert_one_line_error(run_cli("ask", "", timeout=120))
    assert "empty" in line


def test_empty_docs_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("ask", "What is in there?", "--docs", str(empty), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("nest: error: ")]
    assert len(errors) == 1 and "no readable text" in errors[0] and str(empty) in errors[0]


def test_docs_with_only_unusable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin.md").write_bytes("café".encode("latin-1"))
    assert main(["ask", "q", "--docs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any("warning" in x and "empty.txt" in x for x in err)
    assert any("warning" in x and "latin.md" in x and "UTF-8" in x for x in err)
    assert err[-1].startswith("nest: error: no readable text")


def test_missing_model(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = run_cli("ask", "Who won Super Bowl 50?", "--max-new-tokens", "24", env={"NEST_CACHE_DIR": str(cache)})
    line = assert_one_line_error(proc, code=1)
    assert "nest download-model" in line
    assert proc.stdout == ""


def test_missing_model_path(tmp_path: Path) -> None:
    proc = run_cli("ask", "q", "--model", str(tmp_path / "no-such-model"))
    line = assert_one_line_error(proc, code=1)
    assert "does not exist" in line


# ---------------------------------------------------------------------------------------------
# in-process helpers: --set parsing, config, demo corpus, rendering
# ---------------------------------------------------------------------------------------------


def test_set_values_parse_as_json_else_string() -> None:
    assert _key_value("alpha=0.4") == ("alpha", 0.4)
    assert _key_value("max-new-tokens=12") == ("max_new_tokens", 12)
    assert _key_value("continue_in_token_mode=false") == ("continue_in_token_mode", False)
    assert _key_value('stop=["\\n", "."]') == ("stop", ["\n", "."])
    assert _key_value("max_span_tokens=null") == ("max_span_tokens", None)
    assert _key_value("retriever=bm25") == ("retriever", "bm25")
    assert _key_value("system_prompt=a=b") == ("system_prompt", "a=b")


def test_build_config_precedence_and_errors() -> None:
    import argparse

    args = argparse.Namespace(settings=[("method", "ra"), ("alpha", 0.4)], method="knnlm", max_new_tokens=7)
    cfg = _build_config(args)
    assert (cfg.method, cfg.alpha, cfg.max_new_tokens) == ("knnlm", 0.4, 7)
    assert cfg.abstain == NestConfig().abstain  # no --abstain: the config default
    args = argparse.Namespace(settings=[("abstain", "retrieval")], method=None, max_new_tokens=None, abstain="off")
    assert _build_config(args).abstain == "off"  # --abstain wins over --set
    with pytest.raises(ConfigError):
        _build_config(argparse.Namespace(settings=[("tau", 0)], method=None, max_new_tokens=None))


def test_demo_corpus() -> None:
    docs = load_demo_documents()
    assert [d.doc_id for d in docs] == list(demo_texts_from_file())
    assert len(docs) == 5 and {"Super_Bowl_50", "Warsaw"} <= {d.doc_id for d in docs}
    paragraphs = sum(len(d.text.split("\n\n")) for d in docs)
    assert 40 <= paragraphs <= 60
    assert sum(len(d.text.encode("utf-8")) for d in docs) < 100_000
    for d in docs:
        assert d.metadata["source"] == f"https://en.wikipedia.org/wiki/{d.doc_id}"
        assert d.metadata["title"] and d.text == d.text.strip()
    credits = (DEMO_FILE.parent / "CREDITS.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in credits and "Wikipedia contributors" in credits


def _fake_result() -> tuple[NestResult, dict[str, str]]:
    doc = "Intro line.\nthe Broncos won Super Bowl 50 in 2016.\nAnother line with “quotes”."
    response = "Well, the Broncos won Super Bowl 50. And “quotes”."
    spans = []
    for text, n_tok in (("the Broncos won Super Bowl 50", 6), ("“quotes”", 3)):
        ds, rs = doc.index(text), response.index(text)
        spans.append(CopiedSpan(text, "d1", "d1#0", "notes/d1.md", ds, ds + len(text), rs, rs + len(text), n_tok))
    stats = GenerationStats(output_tokens=12, forward_passes=5, copied_tokens=9, total_s=2.0)
    result = NestResult(response, spans[::-1], "eos", list(range(12)), stats, [], "nest")  # order does not matter
    return result, {"d1": doc}


def test_render_plain() -> None:
    result, docs = _fake_result()
    marked = mark_answer(result, color=False)
    assert marked == "Well, the Broncos won Super Bowl 50[1]. And “quotes”[2]."
    sources = render_sources(result, docs, color=False).splitlines()
    assert sources[0] == "Sources"
    assert sources[1] == '[1] notes/d1.md, line 2, chars 12–41: "the Broncos won Super Bowl 50"'
    assert sources[2] == '[2] notes/d1.md, line 3, chars 69–77: "“quotes”"'
    assert render_sources(result, None, color=False).splitlines()[1].startswith("[1] notes/d1.md, chars 12–41")
    stats = render_stats(result, color=False)
    assert stats == "[nest] 12 tokens · 5 forward passes · 75% copied · 6.0 tokens/s · 2.00 s"
    full = render_answer(result, docs, color=False)
    assert "\x1b[" not in full and full.startswith(marked) and full.endswith(stats)


def test_render_color_and_no_spans() -> None:
    result, docs = _fake_result()
    colored = render_answer(result, docs, color=True)
    assert "\x1b[" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == render_answer(result, docs, color=False)
    result.spans = []
    assert render_sources(result, docs) == ""
    assert render_answer(result, docs) == result.text + "\n\n" + render_stats(result)
    assert line_number("a\nb\nc", 4) == 3


# ---------------------------------------------------------------------------------------------
# real model runs (3)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_model
def test_ask_json_demo_corpus() -> None:
    question = "Who won Super Bowl 50?"
    proc = run_cli("ask", question, "--json", "--max-new-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["question"] == question
    assert payload["model"] == "SmolLM2-135M-Instruct"
    assert payload["config"]["max_new_tokens"] == 24 and payload["config"]["method"] == "ra-nest"
    assert {"text", "spans", "stats", "finish_reason", "passages", "method", "sentences", "abstained",
            "truncated"} <= set(payload)  # fmt: skip
    assert 0 < payload["stats"]["output_tokens"] <= 24
    assert payload["passages"], "the passage stage returned nothing"
    check_spans(payload, demo_texts_from_file())
    check_sentences(payload)
    assert payload["abstained"] is False
    assert payload["spans"], f"NEST copied nothing from the Super Bowl 50 article: {payload['text']!r}"


def _user_docs(root: Path) -> Path:
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "lighthouse.md").write_bytes(
        (
            "# The Kvarnholmen Lighthouse\n\n"
            "The Kvarnholmen Lighthouse was built in 1887 by the Swedish engineer Zoë Lindqvist on a granite "
            "islet off the coast of Småland. Its lamp was visible from twenty-two nautical miles away.\n\n"
            "The keeper's cottage became a museum in 1994; it shows the original Fresnel lens, made in Paris.\n"
        ).encode()
    )
    (docs / "sub" / "cafe.txt").write_bytes(
        "Café notes: the crêpe festival in Kvarnholmen happens every July.\r\nCloudberry jam is served.\r\n".encode()
    )
    (docs / "empty.txt").write_bytes(b"")
    (docs / "latin1.txt").write_bytes("café".encode("latin-1"))
    return docs


@pytest.mark.slow
@needs_model
def test_ask_json_user_docs(tmp_path: Path) -> None:
    docs = _user_docs(tmp_path)
    proc = run_cli(
        "ask", "Who built the Kvarnholmen Lighthouse?", "--docs", str(docs), "--json", "--max-new-tokens", "24"
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("nest: warning:")]
    assert any("empty.txt" in w for w in warnings) and any("latin1.txt" in w for w in warnings)
    payload = json.loads(proc.stdout)
    files = {span["doc_id"] for span in payload["spans"]} | {p["doc_id"] for p in payload["passages"]}
    assert files <= {str(docs / "lighthouse.md"), str(docs / "sub" / "cafe.txt")}
    on_disk = {f: Path(f).read_bytes().decode("utf-8") for f in files}
    check_spans(payload, on_disk)
    for span in payload["spans"]:
        assert span["source"] == span["doc_id"]
    assert payload["spans"], f"NEST copied nothing from lighthouse.md: {payload['text']!r}"
    assert any("Zoë" in span["text"] for span in payload["spans"])  # character (not byte) offsets past non-ASCII
    check_sentences(payload)


@pytest.mark.slow
@needs_model
def test_ask_streams_text_then_sources(tmp_path: Path) -> None:
    docs = _user_docs(tmp_path)
    proc = run_cli("ask", "Who built the Kvarnholmen Lighthouse?", "--docs", str(docs), "--max-new-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout.rstrip("\n").split("\n")
    assert re.fullmatch(r"\[ra-nest\] \d+ tokens · \d+ forward passes · \d+% copied · [\d.]+ tokens/s · [\d.]+ s", out[-1])
    assert out[0].strip(), "no answer text"
    assert "\x1b[" not in proc.stdout  # not a terminal: plain text
    assert "Sources" in out, proc.stdout
    if "Sources" in out:
        body = out[out.index("Sources") + 1 : -2]
        assert body and all(re.match(r"\[\d+\] .+, line \d+, chars \d+–\d+: \".*\"$", x) for x in body), body


# ---- nest eval ---------------------------------------------------------------------------------


def _eval_files(tmp_path: Path) -> tuple[Path, Path]:
    corpus = Path(__file__).resolve().parents[1] / "nest_integrations" / "data" / "demo_corpus.jsonl"
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "q1", "question": "Which team won Super Bowl 50?", "answers": ["Denver Broncos"],
                    "gold_passage_ids": ["Super_Bowl_50"]}) + "\n"
        + json.dumps({"id": "q2", "question": "When was Nikola Tesla born?", "answers": ["10 July 1856"],
                      "gold_passage_ids": ["Nikola_Tesla"]}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    return questions, corpus


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--systems", "base,gpt"], "unknown system(s) gpt"),
        (["--sweep", "gamma"], "--sweep expects key=v1"),
        (["--set", "gama=1"], "unknown config key 'gama'"),
    ],
)
def test_eval_bad_usage(tmp_path: Path, extra: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    questions, corpus = _eval_files(tmp_path)
    assert main(["eval", "--questions", str(questions), "--corpus", str(corpus), *extra]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_eval_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    questions, corpus = _eval_files(tmp_path)
    assert main(["eval", "--questions", str(questions)]) == 2
    assert "--corpus is required" in capsys.readouterr().err
    assert main(["eval", "--questions", str(tmp_path / "none.jsonl"), "--corpus", str(corpus)]) == 2
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "no question"}\n', encoding="utf-8")
    assert main(["eval", "--questions", str(bad), "--corpus", str(corpus)]) == 2
    assert "cannot tell the task" in capsys.readouterr().err


@needs_model
def test_eval_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    questions, corpus = _eval_files(tmp_path)
    out, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    argv = ["eval", "--questions", str(questions), "--corpus", str(corpus), "--systems", "base,nest,passage-dump",
            "--limit", "1", "--max-new-tokens", "8", "--out", str(out), "--markdown", str(md), "--plot", str(png),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| nest |" in stdout and "| base |" in stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["systems"]) == {"base", "nest", "passage-dump"}
    assert report["data"]["items"] == 1 and len(report["records"]) == 3
    assert all(r["output_tokens"] <= 8 for r in report["records"] if r["system"] != "passage-dump")
    assert "| passage-dump |" in md.read_text(encoding="utf-8")
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---- nest index / ask --store --------------------------------------------------------------------


def _index_files(folder: Path) -> dict[str, str]:
    docs = {r["id"]: r["text"] for r in map(json.loads, DEMO_FILE.read_text(encoding="utf-8").splitlines())}
    texts = {"super_bowl.txt": docs["Super_Bowl_50"], "tesla.md": docs["Nikola_Tesla"].replace("\n", "\r\n")}
    for name, text in texts.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    return texts


def test_index_bad_input(tmp_path: Path) -> None:
    proc = run_cli("index", str(tmp_path), "--out", str(tmp_path / "store"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("nest: error: nothing to index")
    assert "folder holds no .txt, .md, .pdf files" in proc.stderr
    assert not (tmp_path / "store").exists()  # nothing half-written
    (tmp_path / "x.txt").write_text("x", encoding="utf-8")
    proc = run_cli("ask", "q", "--store", str(tmp_path / "nostore"))
    assert proc.returncode == 2 and "no such datastore" in proc.stderr


@needs_model
def test_index_then_ask_from_store(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = _index_files(docs)
    store = tmp_path / "store"
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "2 documents" in proc.stdout and "2 added" in proc.stdout
    for bad in ("latin1.txt: not UTF-8", "empty.txt: empty file", "blob.txt: binary file"):
        assert bad in proc.stderr
    proc = run_cli("ask", "Who won Super Bowl 50?", "--store", str(store), "--json", "--max-new-tokens", "32")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    for s in payload["spans"]:
        assert SPAN_FIELDS <= set(s)
        on_disk = open(s["source"], encoding="utf-8", newline="").read()  # noqa: SIM115
        assert on_disk[s["doc_start"] : s["doc_end"]] == s["text"]
    assert payload["spans"], payload["text"]

    # re-index: one file changed, one unchanged, one new; --prune drops a removed file
    (docs / "super_bowl.txt").write_text(texts["super_bowl.txt"].replace("Denver Broncos", "Denver Bronx"), encoding="utf-8")
    (docs / "note.txt").write_text("The library opens at nine on weekdays.", encoding="utf-8")
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "1 added, 1 updated, 1 unchanged, 0 deleted" in proc.stdout
    (docs / "tesla.md").unlink()
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--prune")
    assert "0 added, 0 updated, 2 unchanged, 1 deleted" in proc.stdout and "2 documents" in proc.stdout


@needs_model
def test_chat_reads_turns_and_cites(tmp_path: Path) -> None:
    full_env = {k: v for k, v in os.environ.items() if k != "NEST_DEBUG"}
    full_env.update({"NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"})
    proc = subprocess.run(
        [sys.executable, "-m", "nest_integrations.cli", "chat", "--max-new-tokens", "24"],
        input="Who won Super Bowl 50?\n/reset\nWhere was Nikola Tesla born?\n/exit\nnever read\n",
        capture_output=True, text=True, encoding="utf-8", env=full_env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.count("Sources") >= 1 and "(conversation forgotten)" in proc.stdout
    texts = demo_texts_from_file()
    quotes = re.findall(r'^\[\d+\] (\S+), line \d+, chars (\d+)–(\d+): "(.*)"$', proc.stdout, flags=re.M)
    assert quotes
    by_url = {f"https://en.wikipedia.org/wiki/{k}": v for k, v in texts.items()}
    for src, s, e, quoted in quotes:
        doc = by_url.get(src) or texts.get(src)
        assert doc is not None
        if not quoted.endswith("…"):  # shortened quotes are checked by the --json tests
            unescaped = quoted.replace('\\"', '"').replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
            assert doc[int(s) : int(e)] == unescaped


# ---------------------------------------------------------------------------------------------
# support labels, truncation, abstention: the CLI output paths with a fake engine (no model)
# ---------------------------------------------------------------------------------------------


class _FakeEngine:
    """Stands in for NestEngine in the CLI: streams a hand-built result and records every call."""

    def __init__(self, result: NestResult) -> None:
        self.result = result
        self.lm = SimpleNamespace(model_id="fake-lm")
        self.config = NestConfig()
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def _record(self, prompt: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(([dict(m) for m in prompt] if isinstance(prompt, list) else prompt, kwargs))

    def stream(self, prompt: Any, **kwargs: Any) -> Iterator[NestDelta]:
        self._record(prompt, kwargs)
        text = self.result.text
        yield NestDelta(text[:7], [])
        yield NestDelta(text[7:], list(self.result.spans), self.result)

    def generate(self, prompt: Any, **kwargs: Any) -> NestResult:
        self._record(prompt, kwargs)
        return self.result


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch):
    """Make the CLI use a :class:`_FakeEngine` for a given result; returns a setter."""
    from tests.test_render_support import DOC

    def use(result: NestResult) -> _FakeEngine:
        engine = _FakeEngine(result)
        monkeypatch.setattr("nest_integrations.cli._make_engine", lambda args, config: (engine, {"sb50": DOC}))
        return engine

    return use


def test_ask_prints_support_and_truncation(fake_engine, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_render_support import COPIED, GROUNDED, UNSUPPORTED, labelled_result

    result = labelled_result("length")
    fake_engine(result)
    assert main(["ask", "Who won?", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    lines = out.rstrip("\n").split("\n")
    assert lines[0] == result.text  # the streamed answer, as generated
    assert lines[1] == "[truncated: max_new_tokens reached]"
    assert lines[2:7] == [
        "", "Support", f'✓ copied [1]: "{COPIED}."', f'✓ grounded in sb50#0: "{GROUNDED}"',
        f'⚠ unsupported: "{UNSUPPORTED}"',
    ]  # fmt: skip
    assert lines[7:10] == ["", "Sources", f'[1] sb50.txt, line 1, chars 34–70: "{COPIED}"']
    assert lines[-2] == "" and lines[-1].startswith("[nest] 20 tokens")
    # an answer that ended by itself is not flagged
    fake_engine(labelled_result("sentence"))
    assert main(["ask", "Who won?", "--no-stream"]) == 0
    out = capsys.readouterr().out
    assert "[truncated" not in out and out.startswith(f"{COPIED}[1]. ") and f'⚠ unsupported: "{UNSUPPORTED}"' in out


def test_ask_prints_abstention(fake_engine, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_render_support import abstained_result

    result = abstained_result(0.31)
    fake_engine(result)
    assert main(["ask", "What is the capital of Mongolia?"]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert lines[0] == result.text
    threshold = NestConfig().abstain_threshold
    assert lines[1] == f"[abstained: no retrieved passage is close enough to the question (relevance 0.31 < {threshold:.2f})]"
    assert "Support" not in lines and "Sources" not in lines and lines[-1].startswith("[nest] ")


def test_ask_json_has_sentences_abstained_truncated(fake_engine, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_render_support import abstained_result, labelled_result

    result = labelled_result("length")
    fake_engine(result)
    assert main(["ask", "Who won?", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["question"] == "Who won?" and payload["model"] == "fake-lm"
    assert payload["truncated"] is True and payload["abstained"] is False and payload["finish_reason"] == "length"
    assert payload["sentences"] == [
        {"response_start": s.response_start, "response_end": s.response_end, "support": s.support,
         "chunk_ids": s.chunk_ids}
        for s in result.sentences
    ]  # fmt: skip
    assert [s["support"] for s in payload["sentences"]] == ["copied", "grounded", "unsupported"]
    assert payload["config"]["abstain"] == "retrieval"
    fake_engine(abstained_result())
    assert main(["ask", "Who won?", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["abstained"] is True and payload["truncated"] is False and payload["spans"] == []


def test_chat_passes_the_whole_conversation(fake_engine, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every turn sends all messages so far and no retrieval_query: the engine condenses the query itself."""
    from tests.test_render_support import UNSUPPORTED, labelled_result

    engine = fake_engine(labelled_result("eos"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("Where was Ada Lovelace born?\nWho was her father?\n"))
    assert main(["chat"]) == 0
    out = capsys.readouterr().out
    assert out.count("Support") == 2 and out.count(f'⚠ unsupported: "{UNSUPPORTED}"') == 2
    assert len(engine.calls) == 2 and all(kwargs == {} for _, kwargs in engine.calls)
    first, second = (prompt for prompt, _ in engine.calls)
    assert first == [{"role": "user", "content": "Where was Ada Lovelace born?"}]
    assert second == [
        {"role": "user", "content": "Where was Ada Lovelace born?"},
        {"role": "assistant", "content": engine.result.text},
        {"role": "user", "content": "Who was her father?"},
    ]
    # --json: one object per turn, with the query the engine retrieves with (condensed for a follow-up)
    engine = fake_engine(labelled_result("length"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("Where was Ada Lovelace born?\n/reset\nWho won?\nWho was her father?\n"))
    assert main(["chat", "--json"]) == 0
    turns = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert [t["retrieval_query"] for t in turns] == ["Where was Ada Lovelace born?", "Who won?", "Who was her father?\nWho won?"]
    assert all(t["truncated"] is True and len(t["sentences"]) == 3 for t in turns)
    assert len(engine.calls[2][0]) == 3  # /reset forgot the first turn: user, assistant, user


# ---- the sample evaluation set ---------------------------------------------------------------


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("make_sample_eval", REPO / "scripts" / "make_sample_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_questions_fit_the_demo_corpus() -> None:
    records = load_sample_questions()
    assert records == [json.loads(x) for x in SAMPLE_FILE.read_text(encoding="utf-8").splitlines() if x.strip()]
    texts = demo_texts_from_file()
    assert len(records) >= 20 and len({r["id"] for r in records}) == len(records)
    assert {g for r in records for g in r["gold_passage_ids"]} == set(texts)  # every demo article has questions
    for r in records:
        assert {"id", "question", "answers", "answer_start", "gold_passage_ids", "source"} <= set(r)
        (gold,) = r["gold_passage_ids"]
        assert r["answers"] and texts[gold][r["answer_start"] :].startswith(r["answers"][0])


def test_sample_questions_are_the_selection_rule(tmp_path: Path) -> None:
    """The shipped file is exactly what the script makes from the dev data (no hand-picking)."""
    data = REPO.parent / "shared" / "data" / "squad-dev200"
    if not (data / "questions.jsonl").is_file():
        pytest.skip("dev data (../shared/data/squad-dev200) not available")
    script = _load_script()
    out = tmp_path / "sample.jsonl"
    assert script.main(["--questions", str(data / "questions.jsonl"), "--corpus", str(data / "corpus.jsonl"),
                        "--out", str(out)]) == 0  # fmt: skip
    assert out.read_text(encoding="utf-8") == SAMPLE_FILE.read_text(encoding="utf-8")
    # the rule itself, independently: every question whose gold paragraph is verbatim in a demo article
    paragraphs = {r["id"]: r["text"] for r in map(json.loads, (data / "corpus.jsonl").open(encoding="utf-8"))}
    demo = demo_texts_from_file().values()
    expected = [
        q["id"]
        for q in map(json.loads, (data / "questions.jsonl").open(encoding="utf-8"))
        if all(any(paragraphs[g] in d for d in demo) for g in q["gold_passage_ids"])
    ]
    assert [r["id"] for r in load_sample_questions()] == expected


def test_sample_script_remaps_ids_and_offsets() -> None:
    script = _load_script()
    demo = [{"id": "Doc", "text": "First para.\n\nThe cat sat on the mat."}]
    corpus = [{"id": "squad:Doc:1", "text": "The cat sat on the mat."}, {"id": "squad:Other:0", "text": "Elsewhere."}]
    questions = [
        {"id": "a", "question": "Where did the cat sit?", "answers": ["on the mat"], "answer_start": 12,
         "gold_passage_ids": ["squad:Doc:1"], "source": "x"},
        {"id": "b", "question": "Where?", "answers": ["Elsewhere"], "answer_start": 0,
         "gold_passage_ids": ["squad:Other:0"], "source": "x"},
    ]  # fmt: skip
    (rec,) = script.select(questions, corpus, demo)
    assert rec == {**questions[0], "gold_passage_ids": ["Doc"], "answer_start": 25}
    with pytest.raises(ValueError, match="answer_start"):
        script.select([{**questions[0], "answer_start": 3}], corpus, demo)


# ---- real model runs: support, abstention, chat retrieval, eval --sample ----------------------


@needs_model
def test_ask_off_topic_abstains_unless_off(capsys: pytest.CaptureFixture[str]) -> None:
    question = "What is the capital of Mongolia?"  # nothing in the demo corpus is about it
    assert main(["ask", question, "--max-new-tokens", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == NestConfig().abstain_message
    assert lines[1].startswith("[abstained: no retrieved passage is close enough to the question (relevance ")
    assert "Sources" not in lines
    assert main(["ask", question, "--max-new-tokens", "16", "--abstain", "off", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["abstained"] is False and payload["config"]["abstain"] == "off"
    assert payload["text"] != NestConfig().abstain_message and payload["finish_reason"] != "abstained"
    assert payload["sentences"] and payload["truncated"] == (payload["finish_reason"] == "length")


def _biographies(folder: Path) -> dict[str, Path]:
    """Three short hand-written biographies; only Lovelace's names her father (Lord Byron)."""
    folder.mkdir()
    texts = {
        "lovelace": "Ada Lovelace was an English mathematician and writer, chiefly known for her work on Charles "
        "Babbage's proposed mechanical general-purpose computer, the Analytical Engine.\n\n"
        "Ada Lovelace was born in London on 10 December 1815. Ada's father was the poet Lord Byron. Lord Byron "
        "left England a few months after her birth and died in Greece in 1824.\n\n"
        "Her notes on the Analytical Engine include what is often described as the first published computer program.\n",
        "babbage": "Charles Babbage was an English polymath, mathematician and mechanical engineer who originated "
        "the concept of a digital programmable computer.\n\n"
        "Charles Babbage was born in London on 26 December 1791. His father, Benjamin Babbage, was a banker and a "
        "partner of the Praeds. He designed the Difference Engine and later the Analytical Engine.\n",
        "tesla": "Nikola Tesla was a Serbian-American inventor and electrical engineer, best known for his "
        "contributions to the design of the modern alternating current electricity supply system.\n\n"
        "Nikola Tesla was born on 10 July 1856 in the village of Smiljan, in the Austrian Empire. His father, "
        "Milutin Tesla, was an Eastern Orthodox priest. He emigrated to the United States in 1884.\n",
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text(text, encoding="utf-8")
    return paths


@needs_model
def test_chat_follow_up_retrieves_from_the_conversation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """'Who was her father?' after 'Where was Ada Lovelace born?' is answered from the Lovelace file.

    Alone, the follow-up is too far from every passage (relevance below the default threshold with these files: the engine
    abstains), so this fails if chat sends only the last line or retrieves with it alone.
    """
    bios = _biographies(tmp_path / "bios")
    lovelace = str(bios["lovelace"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("Where was Ada Lovelace born?\nWho was her father?\n"))
    assert main(["chat", "--docs", str(tmp_path / "bios"), "--json", "--max-new-tokens", "32"]) == 0
    first, follow_up = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert first["passages"][0]["doc_id"] == lovelace
    assert follow_up["message"] == "Who was her father?"
    assert "Ada Lovelace" in follow_up["retrieval_query"]
    assert follow_up["abstained"] is False, follow_up["text"]
    assert follow_up["passages"][0]["doc_id"] == lovelace
    cited = {s["doc_id"] for s in follow_up["spans"]} | {
        c.split("#")[0] for s in follow_up["sentences"] if s["support"] != "unsupported" for c in s["chunk_ids"]
    }
    assert cited == {lovelace}, follow_up


@needs_model
def test_eval_sample_runs_out_of_the_box(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "X.json"
    argv = ["eval", "--sample", "--limit", "2", "--systems", "nest,passage-dump", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "| nest |" in capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["task"] == "qa" and set(report["systems"]) == {"nest", "passage-dump"}
    assert report["data"]["items"] == 2 and report["data"]["documents"] == 5
    sample = load_sample_questions()[:2]
    assert sorted({r["id"] for r in report["records"]}) == sorted(q["id"] for q in sample)
    assert len(report["records"]) == 4
    # the gold ids name demo documents, so retrieval recall is measured (it would be 0 with SQuAD ids)
    assert report["retrieval"]["recall@5"] == 1.0
    demo_ids = set(demo_texts_from_file())
    assert all(set(r["passage_doc_ids"]) <= demo_ids for r in report["records"])
