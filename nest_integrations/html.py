"""HTML attribution view of a NEST answer: copied spans highlighted, each linked to its source in context.

:func:`render_html` returns a self-contained page (no scripts, no external resources): the answer
with every copied span in a ``<mark>`` carrying its number, every sentence marked with its support
label (NEST.md §10), and a sources list where each span's passage is shown in context with the span
highlighted, with file, line and character range. Used by ``nest ask --html out.html`` and by
:meth:`NestResult._repr_html_` in notebooks (the fragment carries its own ``<style>``).

Structure the tests rely on:

- answer spans are ``<mark class="span" id="span-N" data-doc-id=… data-start=… data-end=…>``; each
  source is ``<li id="src-N">`` holding ``<mark class="cited">`` with the span text exactly as it is
  in the document;
- each labelled sentence of the answer is ``<span class="sentence LABEL" data-support="LABEL"
  title=…>`` (``LABEL`` = copied | grounded | unsupported; grounded ones also carry
  ``data-chunk-id``), followed for grounded and unsupported ones by ``<sup class="label LABEL">``;
  unsupported sentences have a wavy red underline; a ``Support`` list (``<ol class="support">``,
  one ``<li class="LABEL">`` per sentence) names the chunk each grounded sentence relies on;
- a truncated answer has ``<span class="badge truncated">truncated</span>``; an abstention has
  ``<div class="notice abstained">`` (and no sentence marks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

from nest_integrations.render import abstention_reason, line_number, ordered_spans, sentence_spans

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.results import CopiedSpan, NestResult

__all__ = ["render_html", "render_fragment"]

_CONTEXT = 240

_PAGE_CSS = """
body{font:16px/1.55 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
"""

_CSS = """
.nest-view h1{font-size:1.25rem;margin:0 0 .75rem} .nest-view h2{font-size:1rem;margin:1.5rem 0 .5rem;color:#555}
.nest-answer{padding:1rem 1.2rem;border:1px solid #ddd;border-radius:8px;background:#fcfcfc;white-space:pre-wrap}
mark.span{background:#d7ecff;border-bottom:2px solid #2b7bd6;padding:0 1px;border-radius:2px;color:inherit}
mark.span a{color:inherit;text-decoration:none}
sup.marker{font-size:.7em;color:#2b7bd6;font-weight:600;margin-left:1px}
.sentence.unsupported{text-decoration:underline wavy #d0312d;text-decoration-skip-ink:none;text-underline-offset:3px}
.sentence.grounded{text-decoration:underline dotted #2e8b57;text-underline-offset:3px}
sup.label{font-size:.68em;font-weight:600;margin-left:2px;padding:0 3px;border-radius:3px;white-space:nowrap}
sup.label.unsupported{color:#fff;background:#d0312d} sup.label.grounded{color:#fff;background:#2e8b57}
sup.label a{color:inherit;text-decoration:none}
.badge{display:inline-block;font-size:.75rem;font-weight:600;padding:.05rem .45rem;border-radius:999px;margin:.4rem .3rem 0 0}
.badge.truncated{background:#fff1d6;color:#8a5300;border:1px solid #e0a030}
.notice.abstained{margin:.6rem 0;padding:.5rem .8rem;border-left:4px solid #d0312d;background:#fdecea;color:#7a1c16;font-size:.92rem}
ol.sources,ol.support{padding-left:1.4rem} ol.sources li,ol.support li{margin:.6rem 0}
ol.support li.unsupported .lab{color:#d0312d;font-weight:600} ol.support li .lab{font-weight:600;color:#2e8b57}
.where{font-size:.85rem;color:#555} .context{white-space:pre-wrap;font-size:.92rem;background:#f6f6f6;padding:.5rem .7rem;border-radius:6px;margin-top:.25rem}
mark.cited{background:#ffe58a;padding:0 1px;color:inherit}
.stats{font-size:.8rem;color:#777;margin-top:1rem}
"""

_TITLES = {
    "copied": "copied: the sentence is copied from one retrieved passage",
    "grounded": "grounded in {chunk}: its names and numbers, and most of its words, are in that passage",
    "unsupported": "unsupported: no retrieved passage supports this sentence",
}


def _spans_html(text: str, spans: Sequence[tuple[int, CopiedSpan]], start: int, end: int) -> str:
    """``text[start:end]`` escaped, with the (numbered) spans that lie inside it as ``<mark class="span">``."""
    parts: list[str] = []
    pos = start
    for n, s in spans:
        if s.response_start < start or s.response_end > end:
            continue
        parts.append(escape(text[pos : s.response_start]))
        parts.append(
            f'<mark class="span" id="span-{n}" data-doc-id="{escape(s.doc_id)}" data-start="{s.doc_start}" '
            f'data-end="{s.doc_end}"><a href="#src-{n}">{escape(text[s.response_start : s.response_end])}</a></mark>'
            f'<sup class="marker">[{n}]</sup>'
        )
        pos = s.response_end
    parts.append(escape(text[pos:end]))
    return "".join(parts)


def _sentence_ranges(result: NestResult, spans: Sequence[CopiedSpan]) -> list[tuple[int, int, int]]:
    """``(start, end, index into result.sentences)`` of the sentence wrappers, in order.

    A wrapper boundary never falls inside a copied span (it moves to the span's edge), so span marks
    are never split; a sentence left empty by that is not wrapped.
    """
    def inside(b: int) -> CopiedSpan | None:
        return next((s for s in spans if s.response_start < b < s.response_end), None)

    out: list[tuple[int, int, int]] = []
    prev_end = 0
    order = sorted(range(len(result.sentences)), key=lambda i: result.sentences[i].response_start)
    for i in order:
        sent = result.sentences[i]
        a, b = max(0, sent.response_start), min(len(result.text), sent.response_end)
        if (sp := inside(a)) is not None:
            a = sp.response_start
        if (sp := inside(b)) is not None:
            b = sp.response_end
        a = max(a, prev_end)
        if a < b:
            out.append((a, b, i))
            prev_end = b
    return out


def _answer_html(result: NestResult, spans: Sequence[CopiedSpan]) -> str:
    """The answer text: spans marked, sentences wrapped with their support label."""
    text = result.text
    numbered = list(enumerate(spans, 1))
    if result.abstained:
        return _spans_html(text, numbered, 0, len(text))
    parts: list[str] = []
    pos = 0
    for a, b, i in _sentence_ranges(result, spans):
        sent = result.sentences[i]
        label = sent.support
        chunk = ", ".join(sent.chunk_ids)
        parts.append(_spans_html(text, numbered, pos, a))
        title = _TITLES.get(label, label).format(chunk=chunk or "a retrieved passage")
        attrs = f'class="sentence {escape(label)}" data-support="{escape(label)}" title="{escape(title)}"'
        if sent.chunk_ids:
            attrs += f' data-chunk-id="{escape(chunk)}"'
        parts.append(f"<span {attrs}>{_spans_html(text, numbered, a, b)}</span>")
        if label == "unsupported":
            parts.append('<sup class="label unsupported" title="no retrieved passage supports this sentence">'
                         "unsupported</sup>")
        elif label == "grounded":
            parts.append(f'<sup class="label grounded" title="{escape(title)}"><a href="#support-{i + 1}">'
                         f"grounded: {escape(chunk)}</a></sup>")
        pos = b
    parts.append(_spans_html(text, numbered, pos, len(text)))
    return "".join(parts)


def _support_html(result: NestResult) -> str:
    """The ``Support`` list (one item per sentence), or ``""`` for an abstention / no labels."""
    if result.abstained or not result.sentences:
        return ""
    text = result.text
    items = []
    for i, sent in sorted(enumerate(result.sentences), key=lambda x: x[1].response_start):
        quoted = escape(text[sent.response_start : sent.response_end].strip())
        if sent.support == "copied":
            refs = " ".join(f'<a href="#src-{n}">[{n}]</a>'
                            for n in sentence_spans(result, sent.response_start, sent.response_end))
            what = f"copied {refs}".rstrip()
        elif sent.support == "grounded":
            names = ", ".join(f"<code>{escape(c)}</code>" for c in sent.chunk_ids)
            what = f"grounded in {names or 'a retrieved passage'}"
        else:
            what = "unsupported"
        items.append(
            f'<li id="support-{i + 1}" class="{escape(sent.support)}"><span class="lab">{what}</span>: '
            f"&ldquo;{quoted}&rdquo;</li>"
        )
    return '<h2>Support</h2><ol class="support">' + "".join(items) + "</ol>"


def render_fragment(
    result: NestResult,
    documents: Mapping[str, str] | None = None,
    question: str | None = None,
    *,
    style: bool = True,
    threshold: float | None = None,
) -> str:
    """The answer, support labels and sources as an HTML fragment (for notebooks); see :func:`render_html`.

    Args:
        result: the answer.
        documents: ``doc_id`` → original text, to show each span in context.
        question: shown as the heading when given.
        style: include the ``<style>`` the marks need (off in :func:`render_html`, whose head has it).
        threshold: the abstention threshold in force, to say why an abstention happened.
    """
    spans = ordered_spans(result.spans)
    out = []
    if style:
        out.append(f"<style>{_CSS}</style>")
    out.append('<div class="nest-view">')
    if question:
        out.append(f"<h1>{escape(question)}</h1>")
    if result.abstained:
        out.append(
            '<div class="notice abstained" role="note"><strong>Abstained:</strong> '
            f"{escape(abstention_reason(result, threshold))}.</div>"
        )
    out.append(f'<div class="nest-answer">{_answer_html(result, spans)}</div>')
    if result.truncated:
        out.append(
            '<span class="badge truncated" title="the answer was cut: max_new_tokens reached">truncated</span>'
        )
    support = _support_html(result)
    if support:
        out.append(support)
    if spans:
        out.append("<h2>Sources</h2><ol class=\"sources\">")
        for n, s in enumerate(spans, 1):
            doc = (documents or {}).get(s.doc_id)
            where = escape(s.source or s.doc_id)
            if doc is not None and doc[s.doc_start : s.doc_end] == s.text:
                line = line_number(doc, s.doc_start)
                before = doc[max(0, s.doc_start - _CONTEXT) : s.doc_start]
                after = doc[s.doc_end : s.doc_end + _CONTEXT]
                lead = "…" if s.doc_start > _CONTEXT else ""
                tail = "…" if s.doc_end + _CONTEXT < len(doc) else ""
                context = (
                    f"{lead}{escape(before)}<mark class=\"cited\">{escape(s.text)}</mark>{escape(after)}{tail}"
                )
                loc = f"line {line}, chars {s.doc_start}–{s.doc_end}"
            else:  # no document text at hand: the span alone
                context = f'<mark class="cited">{escape(s.text)}</mark>'
                loc = f"chars {s.doc_start}–{s.doc_end}"
            out.append(
                f'<li id="src-{n}"><div class="where"><a href="#span-{n}">[{n}]</a> {where}, {loc} '
                f"({s.n_tokens} tokens)</div><div class=\"context\">{context}</div></li>"
            )
        out.append("</ol>")
    st = result.stats
    out.append(
        f'<div class="stats">{st.output_tokens} tokens · {st.forward_passes} forward passes · '
        f"{st.attribution_ratio:.0%} copied · {st.total_s:.2f} s</div>"
    )
    out.append("</div>")
    return "\n".join(out)


def render_html(
    result: NestResult,
    documents: Mapping[str, str] | None = None,
    question: str | None = None,
    title: str = "NEST answer",
    *,
    threshold: float | None = None,
) -> str:
    """A complete HTML page for ``result``; ``documents`` maps doc_id → original text (for context).

    Without a document's text a span is still shown with its offsets, just without context.
    ``threshold`` (the abstention threshold in force) lets an abstention notice say why.
    """
    body = render_fragment(result, documents, question, style=False, threshold=threshold)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_PAGE_CSS}{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
