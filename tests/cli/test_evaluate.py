"""``nest eval``: usage and file errors, reports, the sample set out of the box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nest_integrations.cli.main import main
from nest_integrations.demo import load_sample_questions
from tests.cli.helpers import (
    DEMO_FILE,
    demo_texts_from_file,
    needs_model,
)


def _eval_files(tmp_path: Path) -> tuple[Path, Path]:
    corpus = DEMO_FILE
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
