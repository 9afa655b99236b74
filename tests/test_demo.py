"""The demo corpus and the sample evaluation set shipped with the package."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from nest_integrations.demo import load_demo_documents, load_sample_questions
from tests.cli.helpers import (
    DEMO_FILE,
    REPO,
    SAMPLE_FILE,
    demo_texts_from_file,
)


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
