"""The shared sentence splitter and word-boundary rule (NEST.md §10)."""

from __future__ import annotations

import pytest

from nest_integrations.sentences import count_words, is_word_char, on_word_boundary, split_sentences, words


def _sents(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_sentences_end_at_terminator_followed_by_space_or_line_break() -> None:
    text = "Tesla was born in 1856. He died in 1943!  Why?\nNew line here"
    assert _sents(text) == ["Tesla was born in 1856.", "He died in 1943!", "Why?", "New line here"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It cost 3.5 million dollars. Then", ["It cost 3.5 million dollars.", "Then"]),
        ("Dr. Watson met J. K. Rowling. Fine.", ["Dr. Watson met J. K. Rowling.", "Fine."]),
        ("He served in the U.S. Army in 1917. Later", ["He served in the U.S. Army in 1917.", "Later"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Version 2.0.1 is out", ["Version 2.0.1 is out"]),
        ("   ", []),
    ],
)
def test_sentence_rule_cases(text: str, expected: list[str]) -> None:
    assert _sents(text) == expected


def test_sentence_ranges_are_exact_slices() -> None:
    text = "  One two.   Three four?\n\nFive"
    for s, e in split_sentences(text):
        assert text[s:e] == text[s:e].strip() and text[s:e]


def test_word_chars_include_non_ascii_and_number_separators() -> None:
    assert is_word_char("é", 0) and is_word_char("Ł", 0) and is_word_char("7", 0)
    assert is_word_char("3.5", 1) and is_word_char("1,000", 1)
    assert not is_word_char("end.", 3) and not is_word_char("a, b", 1) and not is_word_char("x-y", 1)
    assert not is_word_char("abc", 5) and not is_word_char("abc", -1)


@pytest.mark.parametrize(
    ("text", "start", "end", "ok"),
    [
        ("Milutin Tesla", 3, 7, False),  # "utin": starts inside a word
        ("Milutin Tesla", 7, 13, True),  # " Tesla"
        ("born on 10 December 1809 in", 7, 11, True),  # " 10 "
        ("born on 10 December 1809 in", 7, 9, False),  # " 1" cuts "10"
        ("It cost 3.5 million", 9, 19, False),  # "5 million": ".5" is part of the number
        ("Skłodowska-Curie was", 11, 16, True),  # a hyphen is a boundary
        ("Skłodowska-Curie was", 10, 16, False),  # "-Curie": the character before it is a letter
        ("Skłodowska-Curie was", 0, 4, False),  # "Skło" cuts the word
        ("x  ", 1, 3, True),  # blank range
    ],
)
def test_on_word_boundary(text: str, start: int, end: int, ok: bool) -> None:
    assert on_word_boundary(text, start, end) is ok


def test_words_keep_numbers_whole() -> None:
    assert words("In 1,000 years, 3.5 Beyoncé-fans") == ["In", "1,000", "years", "3.5", "Beyoncé", "fans"]
    assert count_words("  studied at the ") == 3
