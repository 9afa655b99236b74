"""Hand-computed cases for nest_integrations.eval.metrics."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from nest_integrations.eval.metrics import (
    AttributionReport,
    answer_recall,
    answer_recall_strict,
    attribution_exactness,
    attribution_report,
    exact_match,
    first_sentence,
    normalize_answer,
    percentile,
    rouge1_f,
    summarize_latencies,
    supported_share,
    token_f1,
)

# --------------------------------------------------------------------------------------------------
# normalize_answer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The  Cat, sat!  on a MAT.", "cat sat on mat"),
        ("An apple", "apple"),
        ("Theatre and Anagram", "theatre and anagram"),  # articles only as whole words
        ("  \tNew\nYork\t ", "new york"),
        ("U.S.A.", "usa"),
        ("the a an", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


# --------------------------------------------------------------------------------------------------
# first_sentence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  It costs 3.5 million dollars. Then more.", "It costs 3.5 million dollars."),
        ("Wow! Great stuff.", "Wow!"),
        ("Why? Because.", "Why?"),
        ("First line\nSecond line. More", "First line"),
        ("Line one\r\nline two.", "Line one"),
        ("Mr. Smith went home. Then", "Mr. Smith went home."),  # abbreviations do not end a sentence
        ("Ends with period.", "Ends with period."),
        ("no terminator here", "no terminator here"),
        ("Version 2.0.1 is out! Yes", "Version 2.0.1 is out!"),
        ("One.\nTwo", "One."),
        ("   \n  ", ""),
    ],
)
def test_first_sentence_rules(text: str, expected: str) -> None:
    assert first_sentence(text) == expected


def test_first_sentence_caps_at_32_words() -> None:
    words = [f"w{i}" for i in range(40)]
    assert first_sentence(" ".join(words)) == " ".join(words[:32])
    assert first_sentence(" ".join(words[:32])) == " ".join(words[:32])
    assert first_sentence(" ".join(words[:33]) + ". tail") == " ".join(words[:32])


def test_first_sentence_word_cap_keeps_original_spacing_and_custom_cap() -> None:
    assert first_sentence("a  b   c d", max_words=3) == "a  b   c"
    with pytest.raises(ValueError):
        first_sentence("text", max_words=0)


# --------------------------------------------------------------------------------------------------
# answer_recall / answer_recall_strict
# --------------------------------------------------------------------------------------------------


def test_answer_recall_any_of_several_answers() -> None:
    assert answer_recall("The capital is Lyon.", ["Paris", "Lyon"]) == 1.0
    assert answer_recall("The capital is Lyon.", ["Paris", "Marseille"]) == 0.0


def test_answer_recall_normalises_both_sides() -> None:
    assert answer_recall("Answer: NEW   YORK!", ["the New-York"]) == 0.0  # hyphen removed -> "newyork"
    assert answer_recall("Answer: NEW   YORK!", ["The new york"]) == 1.0


def test_answer_recall_word_boundaries() -> None:
    assert answer_recall("It was 245 people", ["24"]) == 0.0
    assert answer_recall("It was 245 people", ["245"]) == 1.0
    assert answer_recall("24 people", ["24"]) == 1.0  # at the very start
    assert answer_recall("people: 24", ["24"]) == 1.0  # at the very end


def test_answer_recall_ignores_answers_that_normalise_to_empty() -> None:
    assert answer_recall("the ?", ["the", "?"]) == 0.0
    assert answer_recall("the ?", []) == 0.0


def test_answer_recall_accepts_a_single_string_answer() -> None:
    assert answer_recall("in Paris", "Paris") == 1.0
    # a plain string is one answer, not the characters "x" and "b"
    assert answer_recall("a b", "xb") == 0.0


def test_answer_recall_strict_uses_first_sentence_only() -> None:
    output = "The answer is unclear. It might be Paris."
    assert answer_recall(output, ["Paris"]) == 1.0
    assert answer_recall_strict(output, ["Paris"]) == 0.0
    assert answer_recall_strict("Paris, of course. Not Lyon.", ["Lyon", "Paris"]) == 1.0


# --------------------------------------------------------------------------------------------------
# exact_match / token_f1
# --------------------------------------------------------------------------------------------------


def test_exact_match() -> None:
    assert exact_match("The Cat!", ["a cat"]) == 1.0
    assert exact_match("cat sat", ["cat"]) == 0.0
    assert exact_match("dog", ["cat", "Dog."]) == 1.0
    assert exact_match("dog", []) == 0.0


def test_token_f1_known_values() -> None:
    # "the cat sat" -> [cat, sat]; gold [cat]: P = 1/2, R = 1, F1 = 2 * 1/2 * 1 / (3/2) = 2/3
    assert token_f1("the cat sat", ["cat"]) == pytest.approx(2 / 3)
    # max over gold answers
    assert token_f1("the cat sat", ["dog", "cat"]) == pytest.approx(2 / 3)
    # 2 shared of 4 predicted / 3 gold: P = 1/2, R = 2/3, F1 = (2/3) / (7/6) = 4/7
    assert token_f1("x y z w", "y z v") == pytest.approx(4 / 7)
    # multiplicity counts: [x, x, y] vs [x]: P = 1/3, R = 1, F1 = 1/2
    assert token_f1("x x y", ["x"]) == pytest.approx(0.5)
    # [x, x] vs [x, x, y]: 2 shared, P = 1, R = 2/3, F1 = (4/3) / (5/3) = 0.8 (a set overlap would give 0.4)
    assert token_f1("x x", ["x x y"]) == pytest.approx(0.8)
    assert token_f1("dog", ["cat"]) == 0.0
    assert token_f1("dog", []) == 0.0


# --------------------------------------------------------------------------------------------------
# rouge1_f
# --------------------------------------------------------------------------------------------------


def test_rouge1_f_known_values() -> None:
    # unigram overlap: the x2, cat, on, mat = 5 of 6 on each side -> F1 = 5/6
    assert rouge1_f("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # overlap clipped to min count: "the" once; P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    assert rouge1_f("the the the", "the cat") == pytest.approx(0.4)
    assert rouge1_f("Cat.", "cat") == pytest.approx(1.0)
    assert rouge1_f("dog", "cat") == 0.0
    assert rouge1_f("", "cat") == 0.0


# --------------------------------------------------------------------------------------------------
# supported_share
# --------------------------------------------------------------------------------------------------

KNOWLEDGE = "The Eiffel Tower is located in Paris, France."
OUTPUT = "The Eiffel tower is located in Berlin today."  # 8 words


def test_supported_share_ngrams_only() -> None:
    # 4-grams shared with the knowledge cover "the eiffel tower is located in" = 6 of 8 words
    assert supported_share(OUTPUT, KNOWLEDGE) == pytest.approx(6 / 8)
    # with n = 7 no output 7-gram is in the knowledge
    assert supported_share(OUTPUT, KNOWLEDGE, n=7) == 0.0
    assert supported_share(OUTPUT, "unrelated text about nothing at all") == 0.0


def test_supported_share_with_copied_ranges() -> None:
    start = OUTPUT.index("Berlin")
    assert supported_share(OUTPUT, KNOWLEDGE, copied_char_ranges=[(start, start + 6)]) == pytest.approx(7 / 8)
    # the trailing "." of "today." need not be copied
    t = OUTPUT.index("today")
    ranges = [(start, start + 3), (start + 3, start + 6), (t, t + 5)]  # union of adjacent ranges
    assert supported_share(OUTPUT, KNOWLEDGE, copied_char_ranges=ranges) == pytest.approx(1.0)
    # a partially copied word is not copied
    assert supported_share(OUTPUT, KNOWLEDGE, copied_char_ranges=[(start, start + 4)]) == pytest.approx(6 / 8)
    # copied ranges alone, no knowledge
    assert supported_share("alpha beta gamma delta", "", copied_char_ranges=[(0, 10)]) == pytest.approx(2 / 4)


def test_supported_share_tokenisation_and_passages() -> None:
    # the dash is punctuation, not a word, so the output is the bigram "paris france"
    assert supported_share("Paris — France", "paris france", n=2) == pytest.approx(1.0)
    # n-grams do not cross passage boundaries
    assert supported_share("kb kc", ["ka kb", "kc kd"], n=2) == 0.0
    assert supported_share("kb kc", "ka kb kc kd", n=2) == pytest.approx(1.0)


def test_supported_share_edge_cases() -> None:
    assert supported_share("", KNOWLEDGE) == 0.0
    assert supported_share("... !", KNOWLEDGE) == 0.0
    with pytest.raises(ValueError):
        supported_share(OUTPUT, KNOWLEDGE, n=0)
    with pytest.raises(ValueError):
        supported_share(OUTPUT, KNOWLEDGE, copied_char_ranges=[(5, 2)])


# --------------------------------------------------------------------------------------------------
# attribution_exactness / attribution_report
# --------------------------------------------------------------------------------------------------

DOCS = {"d1": "Hello world. NEST copies spans.", "d2": "Other text."}


@dataclass
class SpanObj:
    text: str
    doc_id: str
    doc_start: int
    doc_end: int


def test_attribution_counts_exact_off_by_one_and_wrong_doc() -> None:
    spans = [
        {"text": "world", "doc_id": "d1", "doc_start": 6, "doc_end": 11},  # exact
        {"text": "world", "doc_id": "d1", "doc_start": 7, "doc_end": 12},  # off by one
        SpanObj("world", "d2", 6, 11),  # wrong doc
        SimpleNamespace(text="world", doc_id="d3", doc_start=6, doc_end=11),  # unknown doc
        SpanObj("copies", "d1", 18, 24),  # exact, as an object
    ]
    report = attribution_report(spans, DOCS)
    assert report == AttributionReport(total=5, exact=2, mismatches=(1, 2, 3))
    assert report.share == pytest.approx(2 / 5)
    assert attribution_exactness(spans, DOCS) == pytest.approx(2 / 5)


def test_attribution_no_spans_is_one() -> None:
    assert attribution_exactness([], DOCS) == 1.0
    assert attribution_report([], DOCS).total == 0


def test_attribution_rejects_negative_offsets_and_missing_fields() -> None:
    # "abcdef"[-2:6] == "ef", but negative offsets are not valid attributions
    assert (
        attribution_exactness([{"text": "ef", "doc_id": "x", "doc_start": -2, "doc_end": 6}], {"x": "abcdef"})
        == 0.0
    )
    assert (
        attribution_exactness([{"text": "ef", "doc_id": "x", "doc_start": 4, "doc_end": 6}], {"x": "abcdef"})
        == 1.0
    )
    with pytest.raises(KeyError):
        attribution_report([{"text": "ef", "doc_id": "x", "doc_start": 4}], {"x": "abcdef"})
    with pytest.raises(AttributeError):
        attribution_report([SimpleNamespace(text="ef", doc_id="x")], {"x": "abcdef"})


# --------------------------------------------------------------------------------------------------
# percentile / summarize_latencies
# --------------------------------------------------------------------------------------------------


def test_percentile_linear_interpolation() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 90) == pytest.approx(3.7)  # rank 0.9 * 3 = 2.7 -> 3 + 0.7 * (4 - 3)
    assert percentile(values, 0) == pytest.approx(1.0)
    assert percentile(values, 100) == pytest.approx(4.0)
    assert percentile([5.0], 90) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summarize_latencies() -> None:
    summary = summarize_latencies([1.0, 2.0, 3.0, 4.0, 10.0])
    assert set(summary) == {"mean", "p50", "p90"}
    assert summary["mean"] == pytest.approx(4.0)
    assert summary["p50"] == pytest.approx(3.0)
    assert summary["p90"] == pytest.approx(7.6)  # rank 0.9 * 4 = 3.6 -> 4 + 0.6 * (10 - 4)
    with pytest.raises(ValueError):
        summarize_latencies([])
