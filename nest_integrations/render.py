"""Terminal rendering of a :class:`~nest_integrations.results.NestResult`: marked answer, sources, stats.

Pure functions of the result (no printing, no terminal detection): the caller decides on colour.

- :func:`mark_answer`: the answer with ``[n]`` after each copied span (spans highlighted with ANSI
  bold / colour when ``color`` is true).
- :func:`render_sources`: ``Sources`` list, one line per span:
  ``[n] source-or-doc_id, line L, chars doc_start–doc_end: "span text"``.
- :func:`render_flags`: ``[truncated: max_new_tokens reached]`` / ``[abstained: …]`` lines.
- :func:`render_support`: ``Support`` list, one line per sentence with its label (NEST.md §10):
  ``✓ copied [1]: "…"``, ``✓ grounded in CHUNK: "…"``, ``⚠ unsupported: "…"``.
- :func:`render_stats`: one footer line (tokens, forward passes, copied %, tokens/s, seconds).
- :func:`render_answer`: all of them together.

Without colour the output is plain text (the ``✓`` / ``⚠`` signs are ordinary characters), so it can
be piped and grepped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.results import CopiedSpan, GenerationStats, NestResult

__all__ = [
    "mark_answer",
    "render_answer",
    "render_flags",
    "render_sources",
    "render_stats",
    "render_support",
    "abstention_reason",
    "sentence_spans",
    "TRUNCATED_NOTE",
    "line_number",
    "ordered_spans",
]

# ANSI styles
_RESET = "\x1b[0m"
_SPAN = "\x1b[1;36m"  # bold cyan: copied text
_MARK = "\x1b[1;33m"  # bold yellow: [n] markers
_DIM = "\x1b[2m"  # dim: stats footer
_HEAD = "\x1b[1m"  # bold: headings
_WARN = "\x1b[1;31m"  # bold red: unsupported sentences, abstention
_NOTE = "\x1b[1;35m"  # bold magenta: truncation
_OK = "\x1b[32m"  # green: supported sentences

TRUNCATED_NOTE = "[truncated: max_new_tokens reached]"
"""The line printed after an answer cut by ``max_new_tokens``."""

_MAX_QUOTE = 200


def _style(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{_RESET}" if color and text else text


def ordered_spans(spans: Sequence[CopiedSpan]) -> list[CopiedSpan]:
    """Spans sorted by their position in the response: span ``n`` (1-based) gets marker ``[n]``."""
    return sorted(spans, key=lambda s: (s.response_start, s.response_end))


def line_number(document_text: str, offset: int) -> int:
    """1-based line number of character ``offset`` in ``document_text``."""
    return document_text.count("\n", 0, max(0, offset)) + 1


def mark_answer(result: NestResult, color: bool = False) -> str:
    """The answer text with a ``[n]`` marker after each copied span (highlighted when ``color``)."""
    text = result.text
    parts: list[str] = []
    pos = 0
    for n, span in enumerate(ordered_spans(result.spans), start=1):
        start, end = span.response_start, span.response_end
        if start < pos or end > len(text) or start >= end:  # overlapping or out of range: never happens
            continue
        piece = text[start:end]
        core = piece.lstrip()  # highlight the words, not the blank before them
        parts.append(text[pos:start] + piece[: len(piece) - len(core)])
        parts.append(_style(core, _SPAN, color))
        parts.append(_style(f"[{n}]", _MARK, color))
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _quote(text: str) -> str:
    """A one-line quotation of span text (newlines shown as ``\\n``, long text shortened)."""
    one_line = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace('"', '\\"')
    if len(one_line) > _MAX_QUOTE:
        one_line = one_line[: _MAX_QUOTE - 1] + "…"
    return f'"{one_line}"'


def render_sources(
    result: NestResult,
    documents: Mapping[str, str] | None = None,
    color: bool = False,
) -> str:
    """The ``Sources`` list of the copied spans, or ``""`` when nothing was copied.

    Args:
        result: the answer.
        documents: ``doc_id`` → original document text, to give each span's line number (omitted
            for documents not in the mapping).
        color: add ANSI styles.
    """
    spans = ordered_spans(result.spans)
    if not spans:
        return ""
    lines = [_style("Sources", _HEAD, color)]
    for n, span in enumerate(spans, start=1):
        where = [span.source or span.doc_id]
        doc_text = documents.get(span.doc_id) if documents is not None else None
        if doc_text is not None:
            where.append(f"line {line_number(doc_text, span.doc_start)}")
        where.append(f"chars {span.doc_start}–{span.doc_end}")
        lines.append(f"{_style(f'[{n}]', _MARK, color)} {', '.join(where)}: {_quote(span.text)}")
    return "\n".join(lines)


def _stats_line(stats: GenerationStats) -> str:
    return (
        f"{stats.output_tokens} tokens · {stats.forward_passes} forward passes · "
        f"{100.0 * stats.attribution_ratio:.0f}% copied · {stats.tokens_per_s:.1f} tokens/s · "
        f"{stats.total_s:.2f} s"
    )


def render_stats(result: NestResult, color: bool = False) -> str:
    """One footer line: method, tokens, forward passes, copied %, tokens/s, seconds."""
    return _style(f"[{result.method}] {_stats_line(result.stats)}", _DIM, color)


def abstention_reason(result: NestResult, threshold: float | None = None) -> str:
    """Why ``result`` abstained, in words (for ``[abstained: …]`` and the HTML notice).

    Args:
        result: an answer with ``abstained`` true.
        threshold: the ``abstain_threshold`` in force, to tell a retrieval abstention (relevance
            below it) from a support abstention (the first sentence was unsupported).
    """
    rel = result.relevance
    if rel is not None and threshold is not None:
        if rel < threshold:
            return f"no retrieved passage is close enough to the question (relevance {rel:.2f} < {threshold:.2f})"
        return "the first sentence of the answer was not supported by the retrieved passages"
    if rel is not None:
        return f"not found in the documents (relevance {rel:.2f})"
    return "not found in the documents"


def render_flags(result: NestResult, color: bool = False, threshold: float | None = None) -> str:
    """``[abstained: reason]`` and/or ``[truncated: max_new_tokens reached]`` lines, or ``""``.

    Args:
        result: the answer.
        color: add ANSI styles.
        threshold: the abstention threshold in force (see :func:`abstention_reason`).
    """
    lines = []
    if result.abstained:
        lines.append(_style(f"[abstained: {abstention_reason(result, threshold)}]", _WARN, color))
    if result.truncated:
        lines.append(_style(TRUNCATED_NOTE, _NOTE, color))
    return "\n".join(lines)


def sentence_spans(result: NestResult, start: int, end: int) -> list[int]:
    """Marker numbers (1-based, as in :func:`mark_answer`) of the spans that overlap ``[start, end)``."""
    return [
        n
        for n, sp in enumerate(ordered_spans(result.spans), start=1)
        if sp.response_start < end and sp.response_end > start
    ]


def render_support(result: NestResult, color: bool = False) -> str:
    """The ``Support`` list: one line per sentence of the answer with its label, or ``""``.

    ``✓ copied [n]: "sentence"`` (the markers of its spans), ``✓ grounded in CHUNK_ID: "sentence"``
    (the retrieved chunk it relies on) and ``⚠ unsupported: "sentence"``. Nothing for an abstention
    (its message is not a claim) or a result without sentence labels.
    """
    if result.abstained or not result.sentences:
        return ""
    text = result.text
    lines = [_style("Support", _HEAD, color)]
    for sent in sorted(result.sentences, key=lambda x: (x.response_start, x.response_end)):
        quoted = _quote(text[sent.response_start : sent.response_end].strip())
        if sent.support == "copied":
            marks = "".join(f"[{n}]" for n in sentence_spans(result, sent.response_start, sent.response_end))
            label = f"✓ copied {marks}".rstrip()
            lines.append(f"{_style(label + ':', _OK, color)} {quoted}")
        elif sent.support == "grounded":
            where = ", ".join(sent.chunk_ids) or "a retrieved passage"
            lines.append(f"{_style(f'✓ grounded in {where}:', _OK, color)} {quoted}")
        else:
            lines.append(_style(f"⚠ unsupported: {quoted}", _WARN, color))
    return "\n".join(lines)


def render_answer(
    result: NestResult,
    documents: Mapping[str, str] | None = None,
    color: bool = False,
    threshold: float | None = None,
) -> str:
    """Marked answer (with the abstained / truncated lines under it), support labels, sources, stats.

    Blocks are separated by a blank line; empty blocks are left out.
    """
    head = mark_answer(result, color)
    flags = render_flags(result, color, threshold)
    if flags:
        head += "\n" + flags
    blocks = [head]
    for block in (render_support(result, color), render_sources(result, documents, color)):
        if block:
            blocks.append(block)
    blocks.append(render_stats(result, color))
    return "\n\n".join(blocks)
