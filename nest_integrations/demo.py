"""The demo corpus shipped inside the package: five abridged Wikipedia articles.

``nest ask`` answers over it when no ``--docs`` are given. The text is from Wikipedia via SQuAD v1.1
/ XQuAD (CC BY-SA 4.0, Wikipedia contributors); see ``nest_integrations/data/CREDITS.md``.
"""

from __future__ import annotations

import json
from importlib import resources

from nest_integrations.chunks import Document

__all__ = ["DEMO_CORPUS_FILE", "load_demo_documents", "demo_corpus_text"]

DEMO_CORPUS_FILE = "demo_corpus.jsonl"


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
