"""The demo corpus shipped inside the package (five abridged Wikipedia articles) and its sample questions.

``nest ask`` answers over the corpus when no ``--docs`` are given; ``nest eval --sample`` runs the
sample questions (``sample_questions.jsonl``: the SQuAD dev questions whose gold paragraph is in the
demo corpus, made by ``scripts/make_sample_eval.py``) over it. The text is from Wikipedia via SQuAD
v1.1 / XQuAD (CC BY-SA 4.0, Wikipedia contributors); see ``nest_integrations/data/CREDITS.md``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from nest_integrations.chunks import Document

__all__ = [
    "DEMO_CORPUS_FILE",
    "SAMPLE_QUESTIONS_FILE",
    "load_demo_documents",
    "demo_corpus_text",
    "load_sample_questions",
    "sample_questions_path",
]

DEMO_CORPUS_FILE = "demo_corpus.jsonl"
SAMPLE_QUESTIONS_FILE = "sample_questions.jsonl"


def demo_corpus_text() -> str:
    """The raw JSON Lines text of the demo corpus (one article per line)."""
    return resources.files("nest_integrations").joinpath("data", DEMO_CORPUS_FILE).read_text(encoding="utf-8")


def load_demo_documents() -> list[Document]:
    """The demo corpus as :class:`~nest_integrations.chunks.Document` objects.

    Each document has ``doc_id`` = the article id (e.g. ``"Super_Bowl_50"``), the article's
    paragraphs joined with blank lines as ``text``, and ``metadata`` = ``{"source": <Wikipedia URL>,
    "title": <article title>}``.
    """
    docs: list[Document] = []
    for line in demo_corpus_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        docs.append(
            Document(doc_id=rec["id"], text=rec["text"], metadata={"source": rec["source"], "title": rec["title"]})
        )
    return docs


def load_sample_questions() -> list[dict[str, Any]]:
    """The sample questions as records: ``id``, ``question``, ``answers``, ``answer_start``,
    ``gold_passage_ids`` (demo document ids) and ``source`` — the format of the SQuAD dev questions."""
    text = resources.files("nest_integrations").joinpath("data", SAMPLE_QUESTIONS_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextmanager
def sample_questions_path() -> Iterator[Path]:
    """A file system path of ``sample_questions.jsonl`` (for readers that take a path), valid inside the block."""
    with resources.as_file(resources.files("nest_integrations").joinpath("data", SAMPLE_QUESTIONS_FILE)) as path:
        yield Path(path)
