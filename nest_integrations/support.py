"""Sentence support labels: does each output sentence say what a retrieved chunk says? (NEST.md §10)

Every sentence of an answer gets one label, computed from the text, the citations and the retrieved
chunks only (no second model), so labels are deterministic and testable:

``copied``
    ≥ 90 % of the sentence's non-space characters lie in citations from one chunk, and every number of
    the sentence outside those citations occurs in that chunk too (a generated date next to a copied
    phrase does not make a copied sentence).
``grounded``
    not copied, but the sentence holds at least one *checkable* word — a number or a capitalised word
    that is not the sentence's first — and every checkable word plus at least half of its content words
    occur in one retrieved chunk, which the label names.
``unsupported``
    anything else, including sentences with nothing checkable that were not copied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from nest_integrations.results import SentenceSupport, Support
from nest_integrations.sentences import split_sentences

__all__ = ["Support", "SentenceSupport", "label_sentences", "COPIED_SHARE", "STOPWORDS"]

COPIED_SHARE = 0.9
"""Share of a sentence's non-space characters that must lie in citations from one chunk for ``copied``."""

STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from into onto upon about above below over
    under between among through during before after since until while as than that this these those there
    here what which who whom whose when where why how is am are was were be been being has have had having do
    does did doing will would shall should can could may might must not no nor so too very also just only
    it its it's he him his she her hers they them their theirs we us our ours you your yours i me my mine
    one ones such some any each every all both either neither other another same own more most less least
    many much few several said says say known called named like""".split()
)
"""English function words that do not count as content words."""

_WORD_RE = re.compile(r"\w+(?:[.,]\d+)*", re.UNICODE)


def _is_number(word: str) -> bool:
    return any(ch.isdigit() for ch in word)


def _checkable(words: list[str]) -> list[str]:
    """Numbers, and capitalised words that are not the sentence's first word."""
    out = []
    for i, w in enumerate(words):
        if _is_number(w) or (i > 0 and w[:1].isupper()):
            out.append(w)
    return out


def _content(words: list[str]) -> list[str]:
    return [w.lower() for w in words if w.lower() not in STOPWORDS and not _is_number(w)]


class _ChunkIndex:
    """Word sets of one chunk: exact forms (for checkable words) and lower-cased (for content words)."""

    def __init__(self, text: str) -> None:
        ws = _WORD_RE.findall(text)
        self.exact = set(ws)
        self.lower = {w.lower() for w in ws}


def label_sentences(
    response: str,
    citations: Sequence[Any],
    chunks: Sequence[tuple[str, str]],
    *,
    copied_share: float = COPIED_SHARE,
) -> list[SentenceSupport]:
    """Label every sentence of ``response``.

    Args:
        response: the answer text.
        citations: its citations (objects or dicts with ``response_start``, ``response_end``,
            ``chunk_id``), i.e. copied spans of at least ``min_citation_words`` words.
        chunks: ``(chunk_id, text)`` of the chunks retrieved for the request, best first (a grounded
            sentence names the first chunk that supports it).
        copied_share: see :data:`COPIED_SHARE`.

    Returns:
        one :class:`SentenceSupport` per sentence of :func:`~nest_integrations.sentences.split_sentences`.
    """
    def field_of(c: Any, name: str) -> Any:
        return c[name] if isinstance(c, dict) else getattr(c, name)

    cites = [(int(field_of(c, "response_start")), int(field_of(c, "response_end")), str(field_of(c, "chunk_id"))) for c in citations]
    texts = dict(chunks)
    indexes: dict[str, _ChunkIndex] = {}

    def index(cid: str) -> _ChunkIndex | None:
        if cid not in texts:
            return None
        if cid not in indexes:
            indexes[cid] = _ChunkIndex(texts[cid])
        return indexes[cid]

    out: list[SentenceSupport] = []
    for s, e in split_sentences(response):
        non_space = [i for i in range(s, e) if not response[i].isspace()]
        total = len(non_space)
        # copied: one chunk's citations cover >= copied_share of the non-space characters
        covered: dict[str, set[int]] = {}
        for cs, ce, cid in cites:
            lo, hi = max(cs, s), min(ce, e)
            if lo < hi:
                covered.setdefault(cid, set()).update(i for i in range(lo, hi) if not response[i].isspace())
        label: Support = "unsupported"
        ids: list[str] = []
        if covered and total:
            cid, chars = max(covered.items(), key=lambda kv: len(kv[1]))
            if len(chars) / total >= copied_share:
                outside = "".join(response[i] if i not in chars else " " for i in range(s, e))
                numbers = [w for w in _WORD_RE.findall(outside) if _is_number(w)]
                idx = index(cid)
                if not numbers or (idx is not None and all(w in idx.exact for w in numbers)):
                    label, ids = "copied", [cid]
        if label == "unsupported":
            ws = _WORD_RE.findall(response[s:e])
            check = _checkable(ws)
            content = _content(ws)
            if check:
                for cid, _ in chunks:
                    idx = index(cid)
                    assert idx is not None
                    if not all(w in idx.exact for w in check):
                        continue
                    found = sum(1 for w in content if w in idx.lower)
                    if not content or found * 2 >= len(content):
                        label, ids = "grounded", [cid]
                        break
        out.append(SentenceSupport(s, e, label, ids))
    return out
