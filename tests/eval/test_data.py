"""Reading evaluation files: formats, task detection, own-article exclusion, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nest_integrations.errors import EvalDataError, NestError
from nest_integrations.eval.data import detect_mode, read_corpus, read_items, read_jsonl


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_read_jsonl_errors(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="expected a JSON object"):
        read_jsonl(tmp_path / "list.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="no records"):
        read_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"id": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(EvalDataError, match="not UTF-8"):
        read_jsonl(tmp_path / "latin1.jsonl")
    assert issubclass(EvalDataError, NestError)


def test_corpus_checks(tmp_path: Path) -> None:
    ok = read_corpus(_write(tmp_path / "c.jsonl", [{"id": "a", "title": "A", "text": "x y"}, {"id": "b", "text": "z"}]))
    assert [(d.doc_id, d.text, dict(d.metadata)) for d in ok] == [("a", "x y", {"title": "A"}), ("b", "z", {})]
    with pytest.raises(EvalDataError, match="duplicate id 'a'"):
        read_corpus(_write(tmp_path / "d.jsonl", [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]))
    with pytest.raises(EvalDataError, match="missing field"):
        read_corpus(_write(tmp_path / "m.jsonl", [{"id": "a"}]))
    with pytest.raises(EvalDataError, match="every document is empty"):
        read_corpus(_write(tmp_path / "w.jsonl", [{"id": "a", "text": "  \n"}]))


def test_detect_mode() -> None:
    assert detect_mode([{"question": "q", "answers": []}]) == "qa"
    assert detect_mode([{"prompt": "p", "reference_continuation": "r"}]) == "completion"
    assert detect_mode([{"prompt": "p", "knowledge": "k"}]) == "bio"
    with pytest.raises(EvalDataError, match="cannot tell the task"):
        detect_mode([{"text": "t"}])


def test_items_per_mode(tmp_path: Path) -> None:
    mode, items = read_items(
        _write(tmp_path / "q.jsonl", [{"id": 7, "question": "Who?", "answers": "Ann", "gold_passage_ids": ["p1"]}])
    )
    assert mode == "qa"
    assert (items[0].id, items[0].prompt, items[0].answers, items[0].gold_doc_ids) == ("7", "Who?", ["Ann"], ["p1"])

    corpus = read_corpus(
        _write(
            tmp_path / "c.jsonl",
            [
                {"id": "art:1", "title": "Robert Boulter", "text": "a"},
                {"id": "copy-of-1", "title": "Robert Boulter", "text": "b"},
                {"id": "art:2", "title": "Other", "text": "c"},
            ],
        )
    )
    mode, items = read_items(
        _write(
            tmp_path / "p.jsonl",
            [{"id": "art:1", "title": "Robert Boulter", "prompt": "Robert", "reference_continuation": "is an actor"}],
        ),
        corpus=corpus,
    )
    assert mode == "completion"
    # the prompt's own article is excluded by id and by title, nothing else
    assert items[0].exclude_doc_ids == ["art:1", "copy-of-1"]

    with pytest.raises(EvalDataError, match="empty knowledge"):
        read_items(_write(tmp_path / "b.jsonl", [{"id": "b", "prompt": "Tell me", "knowledge": " "}]))
    with pytest.raises(EvalDataError, match="missing field"):
        read_items(_write(tmp_path / "b2.jsonl", [{"question": "q", "answers": ["a"]}]))
