"""Terminal rendering of support labels, truncation and abstention (hand-built results, no model)."""

from __future__ import annotations

import re

from nest_integrations.attribution import CopiedSpan
from nest_integrations.engine import GenerationStats, NestResult, RetrievedPassage
from nest_integrations.render import (
    TRUNCATED_NOTE,
    abstention_reason,
    render_answer,
    render_flags,
    render_sources,
    render_stats,
    render_support,
)
from nest_integrations.support import SentenceSupport

DOC = "Super Bowl 50 was played in 2016. The Denver Broncos won Super Bowl 50 at Levi's Stadium."
COPIED = "The Denver Broncos won Super Bowl 50"
GROUNDED = "It was played in 2016 by the Broncos."
UNSUPPORTED = "They celebrated on Mars with Elvis"


def labelled_result(finish_reason: str = "length") -> NestResult:
    """An answer of three sentences (copied, grounded, unsupported), cut by max_new_tokens by default."""
    text = f"{COPIED}. {GROUNDED} {UNSUPPORTED}"
    ds = DOC.index(COPIED)
    span = CopiedSpan(COPIED, "sb50", "sb50#0", "sb50.txt", ds, ds + len(COPIED), 0, len(COPIED), 7)
    g0 = text.index(GROUNDED)
    u0 = text.index(UNSUPPORTED)
    sentences = [
        SentenceSupport(0, len(COPIED) + 1, "copied", ["sb50#0"]),
        SentenceSupport(g0, g0 + len(GROUNDED), "grounded", ["sb50#0"]),
        SentenceSupport(u0, u0 + len(UNSUPPORTED), "unsupported", []),
    ]
    stats = GenerationStats(output_tokens=20, forward_passes=9, copied_tokens=7, total_s=2.0)
    return NestResult(
        text=text, spans=[span], finish_reason=finish_reason, token_ids=list(range(20)), stats=stats,
        passages=[RetrievedPassage("sb50#0", "sb50", 0.8)], sentences=sentences, relevance=0.71,
    )  # fmt: skip


def abstained_result(relevance: float = 0.31) -> NestResult:
    """An abstention as the engine returns it: the message, one unsupported sentence, no spans."""
    msg = "I could not find the answer in the documents."
    return NestResult(
        text=msg, spans=[], finish_reason="abstained", token_ids=[], stats=GenerationStats(), passages=[],
        sentences=[SentenceSupport(0, len(msg), "unsupported", [])], abstained=True, relevance=relevance,
    )  # fmt: skip


def test_support_lines_label_every_sentence() -> None:
    result = labelled_result()
    lines = render_support(result).splitlines()
    assert lines == [
        "Support",
        f'✓ copied [1]: "{COPIED}."',
        f'✓ grounded in sb50#0: "{GROUNDED}"',
        f'⚠ unsupported: "{UNSUPPORTED}"',
    ]
    # a sentence whose label changes changes its line: the block reflects the labels, not the text
    result.sentences[1] = SentenceSupport(result.sentences[1].response_start, result.sentences[1].response_end,
                                          "unsupported", [])  # fmt: skip
    assert render_support(result).splitlines()[2] == f'⚠ unsupported: "{GROUNDED}"'
    result.sentences = []
    assert render_support(result) == ""


def test_flags_truncated_and_abstained() -> None:
    assert render_flags(labelled_result("length")) == TRUNCATED_NOTE == "[truncated: max_new_tokens reached]"
    for reason in ("eos", "stop", "sentence"):
        assert render_flags(labelled_result(reason)) == ""
    flag = render_flags(abstained_result(0.31), threshold=0.45)
    assert flag == "[abstained: no retrieved passage is close enough to the question (relevance 0.31 < 0.45)]"
    assert "first sentence" in abstention_reason(abstained_result(0.7), threshold=0.45)
    assert render_flags(abstained_result(0.31)).startswith("[abstained: ")
    assert render_support(abstained_result()) == ""  # the abstention message is not a claim to label


def test_render_answer_blocks_in_order_plain_and_colour() -> None:
    result = labelled_result()
    plain = render_answer(result, {"sb50": DOC})
    assert "\x1b[" not in plain
    head, support, sources, stats = plain.split("\n\n")
    assert head == f"{COPIED}[1]. {GROUNDED} {UNSUPPORTED}\n{TRUNCATED_NOTE}"
    assert support == render_support(result) and sources == render_sources(result, {"sb50": DOC})
    assert stats == render_stats(result)
    coloured = render_answer(result, {"sb50": DOC}, color=True)
    assert "\x1b[1;31m⚠ unsupported" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    head = render_answer(abstained_result(), threshold=0.45).split("\n\n")[0]
    assert head.splitlines() == [abstained_result().text, render_flags(abstained_result(), threshold=0.45)]
