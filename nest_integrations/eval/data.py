"""Evaluation data: question / corpus files in the formats of the dev data, read into typed items.

Formats (UTF-8 JSON Lines, one record per line):

* corpus: ``{"id", "title", "text"}``
* QA questions: ``{"id", "question", "answers": [...], "gold_passage_ids": [...]}``
* completion prompts: ``{"id", "title", "prompt", "reference_continuation"}``; the corpus is the
  other articles — the prompt's own article (same ``id`` or same ``title``) is excluded per prompt.
* biographies: ``{"id", "entity", "prompt", "knowledge"}``; the person's knowledge text is the corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nest_integrations.chunks import Document
from nest_integrations.errors import EvalDataError

__all__ = [
    "EvalDataError",
    "EvalItem",
    "Mode",
    "read_jsonl",
    "read_corpus",
    "read_items",
    "detect_mode",
    "unanswerable_variant",
]

Mode = Literal["qa", "completion", "bio"]


@dataclass
class EvalItem:
    """One evaluation prompt with what its metrics need."""

    id: str
    prompt: str
    answers: list[str] = field(default_factory=list)
    gold_doc_ids: list[str] = field(default_factory=list)
    reference: str | None = None
    knowledge: str | None = None
    exclude_doc_ids: list[str] = field(default_factory=list)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file; blank lines are skipped.

    Raises:
        EvalDataError: the file is missing, not UTF-8, has a line that is not a JSON object, or is empty.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalDataError(f"{p}: file not found") from None
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise EvalDataError(f"{p}: cannot read ({e.strerror})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalDataError(f"{p}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise EvalDataError(f"{p}:{n}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    if not out:
        raise EvalDataError(f"{p}: no records")
    return out


def _require(rec: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise EvalDataError(f"{where}: missing field(s) {', '.join(missing)}")


def read_corpus(path: str | Path) -> list[Document]:
    """Documents of a corpus file (``id``, ``text``, optional ``title`` kept as metadata).

    Raises:
        EvalDataError: missing fields, duplicate ids, or a corpus with no text.
    """
    docs: list[Document] = []
    seen: set[str] = set()
    for n, rec in enumerate(read_jsonl(path), 1):
        _require(rec, ("id", "text"), f"{path} record {n}")
        doc_id = str(rec["id"])
        if doc_id in seen:
            raise EvalDataError(f"{path} record {n}: duplicate id {doc_id!r}")
        seen.add(doc_id)
        meta = {"title": rec["title"]} if rec.get("title") else {}
        docs.append(Document(doc_id, str(rec["text"]), meta))
    if not any(d.text.strip() for d in docs):
        raise EvalDataError(f"{path}: every document is empty")
    return docs


def detect_mode(records: list[dict[str, Any]]) -> Mode:
    """``qa``, ``completion`` or ``bio`` from the fields of the first record."""
    first = records[0]
    if "question" in first and "answers" in first:
        return "qa"
    if "prompt" in first and "reference_continuation" in first:
        return "completion"
    if "prompt" in first and "knowledge" in first:
        return "bio"
    raise EvalDataError(
        "cannot tell the task from the fields "
        f"{sorted(first)}: expected question+answers (QA), prompt+reference_continuation (completion) "
        "or prompt+knowledge (biography)"
    )


def read_items(
    path: str | Path, mode: Mode | None = None, corpus: list[Document] | None = None
) -> tuple[Mode, list[EvalItem]]:
    """The items of a questions / prompts file and its mode (detected unless given).

    For completion prompts, ``corpus`` is used to find the prompt's own article (same id or title),
    which the passage stage must not return for that prompt.
    """
    records = read_jsonl(path)
    mode = mode or detect_mode(records)
    by_title: dict[str, list[str]] = {}
    for d in corpus or []:
        if d.metadata.get("title"):
            by_title.setdefault(str(d.metadata["title"]), []).append(d.doc_id)
    items: list[EvalItem] = []
    for n, rec in enumerate(records, 1):
        where = f"{path} record {n}"
        if mode == "qa":
            _require(rec, ("id", "question", "answers"), where)
            answers = rec["answers"]
            if isinstance(answers, str):
                answers = [answers]
            items.append(
                EvalItem(
                    id=str(rec["id"]),
                    prompt=str(rec["question"]),
                    answers=[str(a) for a in answers],
                    gold_doc_ids=[str(g) for g in rec.get("gold_passage_ids", [])],
                )
            )
        elif mode == "completion":
            _require(rec, ("id", "prompt", "reference_continuation"), where)
            own = {str(rec["id"])} | set(by_title.get(str(rec.get("title", "")), []))
            items.append(
                EvalItem(
                    id=str(rec["id"]),
                    prompt=str(rec["prompt"]),
                    reference=str(rec["reference_continuation"]),
                    exclude_doc_ids=sorted(own),
                )
            )
        else:
            _require(rec, ("id", "prompt", "knowledge"), where)
            if not str(rec["knowledge"]).strip():
                raise EvalDataError(f"{where}: empty knowledge text")
            items.append(EvalItem(id=str(rec["id"]), prompt=str(rec["prompt"]), knowledge=str(rec["knowledge"])))
    return mode, items


def unanswerable_variant(items: list[EvalItem], corpus: list[Document], min_answer_chars: int = 4) -> list[EvalItem]:
    """The unanswerable variant of a QA set (``nest eval --unanswerable``).

    Each question keeps its text and answers, but the passage stage may not return its gold passages
    nor any other passage whose normalised text contains one of its normalised gold answers of at least
    ``min_answer_chars`` characters (whole words) — so the corpus cannot answer it, and the right output
    is an abstention. Item ids get the suffix ``#unanswerable``.
    """
    from nest_integrations.eval.metrics import normalize_answer

    norm_docs = [(d.doc_id, f" {normalize_answer(d.text)} ") for d in corpus]
    out: list[EvalItem] = []
    for it in items:
        answers = [normalize_answer(a) for a in it.answers]
        answers = [a for a in answers if len(a) >= min_answer_chars]
        removed = set(it.gold_doc_ids)
        for doc_id, text in norm_docs:
            if any(f" {a} " in text for a in answers):
                removed.add(doc_id)
        out.append(
            EvalItem(
                id=f"{it.id}#unanswerable",
                prompt=it.prompt,
                answers=list(it.answers),
                gold_doc_ids=list(it.gold_doc_ids),
                reference=it.reference,
                knowledge=it.knowledge,
                exclude_doc_ids=sorted(removed | set(it.exclude_doc_ids)),
            )
        )
    return out

