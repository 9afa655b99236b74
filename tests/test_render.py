"""Terminal rendering of a result: ``[n]`` markers, sources with line and character range, stats."""

from __future__ import annotations

import re

from nest_integrations.render import line_number, mark_answer, render_answer, render_sources, render_stats
from nest_integrations.results import CopiedSpan, GenerationStats, NestResult


def _fake_result() -> tuple[NestResult, dict[str, str]]:
    doc = "Intro line.\nthe Broncos won Super Bowl 50 in 2016.\nAnother line with “quotes”."
    response = "Well, the Broncos won Super Bowl 50. And “quotes”."
    spans = []
    for text, n_tok in (("the Broncos won Super Bowl 50", 6), ("“quotes”", 3)):
        ds, rs = doc.index(text), response.index(text)
        spans.append(CopiedSpan(text, "d1", "d1#0", "notes/d1.md", ds, ds + len(text), rs, rs + len(text), n_tok))
    stats = GenerationStats(output_tokens=12, forward_passes=5, copied_tokens=9, total_s=2.0)
    result = NestResult(response, spans[::-1], "eos", list(range(12)), stats, [], "nest")  # order does not matter
    return result, {"d1": doc}


def test_render_plain() -> None:
    result, docs = _fake_result()
    marked = mark_answer(result, color=False)
    assert marked == "Well, the Broncos won Super Bowl 50[1]. And “quotes”[2]."
    sources = render_sources(result, docs, color=False).splitlines()
    assert sources[0] == "Sources"
    assert sources[1] == '[1] notes/d1.md, line 2, chars 12–41: "the Broncos won Super Bowl 50"'
    assert sources[2] == '[2] notes/d1.md, line 3, chars 69–77: "“quotes”"'
    assert render_sources(result, None, color=False).splitlines()[1].startswith("[1] notes/d1.md, chars 12–41")
    stats = render_stats(result, color=False)
    assert stats == "[nest] 12 tokens · 5 forward passes · 75% copied · 6.0 tokens/s · 2.00 s"
    full = render_answer(result, docs, color=False)
    assert "\x1b[" not in full and full.startswith(marked) and full.endswith(stats)


def test_render_color_and_no_spans() -> None:
    result, docs = _fake_result()
    colored = render_answer(result, docs, color=True)
    assert "\x1b[" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == render_answer(result, docs, color=False)
    result.spans = []
    assert render_sources(result, docs) == ""
    assert render_answer(result, docs) == result.text + "\n\n" + render_stats(result)
    assert line_number("a\nb\nc", 4) == 3
