#!/usr/bin/env python
"""Make ``nest_integrations/data/sample_questions.jsonl``: the sample QA set of ``nest eval --sample``.

Selection rule (the only one; no question is picked by hand): a question of the SQuAD dev file is
kept when the text of *every* one of its gold paragraphs (looked up by id in the SQuAD corpus file)
occurs verbatim in one document of the demo corpus (``nest_integrations/data/demo_corpus.jsonl``,
whose documents are whole SQuAD paragraphs joined with blank lines). Questions keep their order and
their record format (``id``, ``question``, ``answers``, ``answer_start``, ``gold_passage_ids``,
``source``), with two fields re-mapped to the demo corpus, which is the corpus they are evaluated on:

- ``gold_passage_ids``: the demo document id(s) holding the gold paragraph(s) (e.g. ``Warsaw``
  instead of ``squad:Warsaw:3``);
- ``answer_start``: the answer's offset in that demo document (the paragraph's offset in it plus the
  original offset), checked to point at the first answer.

Usage (from the repository root; the defaults are the dev data in ``../shared/data``)::

    python scripts/make_sample_eval.py [--questions FILE] [--corpus FILE] [--demo FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "squad-dev200"
PACKAGE_DATA = REPO / "nest_integrations" / "data"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a JSON Lines file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def select(
    questions: Sequence[dict[str, Any]], corpus: Sequence[dict[str, Any]], demo: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The questions whose every gold paragraph lies verbatim in a demo document, re-mapped to it.

    Args:
        questions: SQuAD question records (``gold_passage_ids`` = paragraph ids of ``corpus``).
        corpus: the SQuAD paragraphs (``id``, ``text``).
        demo: the demo corpus documents (``id``, ``text``).

    Raises:
        ValueError: a gold id missing from ``corpus``, or a re-mapped ``answer_start`` that does not
            point at the answer.
    """
    paragraphs = {str(r["id"]): str(r["text"]) for r in corpus}
    out: list[dict[str, Any]] = []
    for q in questions:
        gold = [str(g) for g in q.get("gold_passage_ids", [])]
        if not gold:
            continue
        places: list[tuple[str, int]] = []
        for g in gold:
            if g not in paragraphs:
                raise ValueError(f"question {q['id']}: gold paragraph {g!r} is not in the corpus file")
            text = paragraphs[g]
            hit = next(((str(d["id"]), str(d["text"]).find(text)) for d in demo if text in str(d["text"])), None)
            if hit is None:
                break
            places.append(hit)
        else:
            rec = dict(q)
            rec["gold_passage_ids"] = list(dict.fromkeys(doc_id for doc_id, _ in places))
            if "answer_start" in q and q["answer_start"] is not None and places:
                doc_id, offset = places[0]
                start = offset + int(q["answer_start"])
                doc_text = next(str(d["text"]) for d in demo if str(d["id"]) == doc_id)
                answer = str(q["answers"][0])
                if doc_text[start : start + len(answer)] != answer:
                    raise ValueError(f"question {q['id']}: answer_start does not point at {answer!r} in {doc_id}")
                rec["answer_start"] = start
            out.append(rec)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Write the sample questions file; print how many questions were selected, per document."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=Path, default=DATA / "questions.jsonl", help="SQuAD dev questions (JSONL)")
    p.add_argument("--corpus", type=Path, default=DATA / "corpus.jsonl", help="SQuAD dev paragraphs (JSONL)")
    p.add_argument("--demo", type=Path, default=PACKAGE_DATA / "demo_corpus.jsonl", help="the demo corpus (JSONL)")
    p.add_argument("--out", type=Path, default=PACKAGE_DATA / "sample_questions.jsonl", help="output file (JSONL)")
    args = p.parse_args(argv)
    selected = select(read_jsonl(args.questions), read_jsonl(args.corpus), read_jsonl(args.demo))
    if not selected:
        print("no question has its gold paragraph in the demo corpus", file=sys.stderr)
        return 1
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in selected), encoding="utf-8")
    per_doc: dict[str, int] = {}
    for r in selected:
        for g in r["gold_passage_ids"]:
            per_doc[g] = per_doc.get(g, 0) + 1
    print(f"{args.out}: {len(selected)} questions ({', '.join(f'{k} {v}' for k, v in per_doc.items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
