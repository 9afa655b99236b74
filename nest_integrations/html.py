"""HTML attribution view of a NEST answer: copied spans highlighted, each linked to its source in context.

:func:`render_html` returns a self-contained page (no scripts, no external resources): the answer
with every copied span in a ``<mark>`` carrying its number, and a sources list where each span's
passage is shown in context with the span highlighted, with file, line and character range. Used by
``nest ask --html out.html`` and by :meth:`NestResult._repr_html_` in notebooks.

Structure the tests rely on: answer spans are ``<mark class="span" id="span-N" data-doc-id=…
data-start=… data-end=…>``; each source is ``<li id="src-N">`` holding ``<mark class="cited">``
with the span text exactly as it is in the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING

from nest_integrations.render import line_number, ordered_spans

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.engine import NestResult

__all__ = ["render_html", "render_fragment"]

_CONTEXT = 240

_CSS = """
body{font:16px/1.55 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h1{font-size:1.25rem;margin:0 0 .75rem} h2{font-size:1rem;margin:1.5rem 0 .5rem;color:#555}
.nest-answer{padding:1rem 1.2rem;border:1px solid #ddd;border-radius:8px;background:#fcfcfc;white-space:pre-wrap}
mark.span{background:#d7ecff;border-bottom:2px solid #2b7bd6;padding:0 1px;border-radius:2px}
mark.span a{color:inherit;text-decoration:none}
sup.marker{font-size:.7em;color:#2b7bd6;font-weight:600;margin-left:1px}
ol.sources{padding-left:1.4rem} ol.sources li{margin:.6rem 0}
.where{font-size:.85rem;color:#555} .context{white-space:pre-wrap;font-size:.92rem;background:#f6f6f6;padding:.5rem .7rem;border-radius:6px;margin-top:.25rem}
mark.cited{background:#ffe58a;padding:0 1px}
.stats{font-size:.8rem;color:#777;margin-top:1rem}
"""


def render_fragment(result: NestResult, documents: Mapping[str, str] | None = None, question: str | None = None) -> str:
    """The answer and sources as an HTML fragment (for notebooks); see :func:`render_html`."""
    spans = ordered_spans(result.spans)
    text = result.text
    parts: list[str] = []
    pos = 0
    for n, s in enumerate(spans, 1):
        parts.append(escape(text[pos : s.response_start]))
        parts.append(
            f'<mark class="span" id="span-{n}" data-doc-id="{escape(s.doc_id)}" data-start="{s.doc_start}" '
            f'data-end="{s.doc_end}"><a href="#src-{n}">{escape(text[s.response_start : s.response_end])}</a></mark>'
            f'<sup class="marker">[{n}]</sup>'
        )
        pos = s.response_end
    parts.append(escape(text[pos:]))
    out = []
    if question:
        out.append(f"<h1>{escape(question)}</h1>")
    out.append(f'<div class="nest-answer">{"".join(parts)}</div>')
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
    return "\n".join(out)


def render_html(
    result: NestResult,
    documents: Mapping[str, str] | None = None,
    question: str | None = None,
    title: str = "NEST answer",
) -> str:
    """A complete HTML page for ``result``; ``documents`` maps doc_id → original text (for context).

    Without a document's text a span is still shown with its offsets, just without context.
    """
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n{render_fragment(result, documents, question)}\n</body></html>\n"
    )
