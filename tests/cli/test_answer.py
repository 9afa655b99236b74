"""``nest ask`` / ``nest chat``, run as a subprocess or in process.

Runs that need the real default model are skipped when it is not in the cache
(``nest download-model`` fetches it); they use small ``--max-new-tokens`` budgets. The terminal,
``--json`` and chat output paths are also checked with a fake engine that returns hand-built
results (support labels, truncation, abstention), so they are tested without a model.
"""

from __future__ import annotations

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

from nest_integrations.cli.main import main
from nest_integrations.config import NestConfig
from nest_integrations.results import NestDelta, NestResult
from tests.cli.helpers import (
    check_sentences,
    check_spans,
    demo_texts_from_file,
    needs_model,
    run_cli,
)


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
    body = out[out.index("Sources") + 1 : -2]
    assert body and all(re.match(r"\[\d+\] .+, line \d+, chars \d+–\d+: \".*\"$", x) for x in body), body


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
        monkeypatch.setattr("nest_integrations.cli.answer.make_engine", lambda args, config: (engine, {"sb50": DOC}))
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
