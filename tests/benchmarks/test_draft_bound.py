"""The draft-bound replay (benchmarks/draft_bound.py) counts forward passes correctly on hand-made token lists."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
draft_bound = pytest.importorskip("draft_bound")


def test_no_match_needs_one_forward_per_token():
    # every token new: nothing to draft, one pass per output token
    assert draft_bound.replay([1, 2, 3], [4, 5, 6, 7], lambda x: draft_bound.continuations(x, 1, 8)) == (4, 4)


def test_a_copied_run_is_verified_in_one_pass():
    prompt = [9, 1, 2, 3, 4, 5, 6, 8]
    # after 1 is committed, the continuation 2..6 of its occurrence in the prompt is accepted whole
    forwards, _ = draft_bound.replay(prompt, [1, 2, 3, 4, 5, 6], lambda x: draft_bound.continuations(x, 1, 8))
    assert forwards == 1


def test_latest_and_earliest_occurrence_differ():
    text = [7, 1, 2, 7, 3, 4, 7]  # only the last token "7" recurs
    assert draft_bound.continuations(text, 1, 2)[0] == (3, 4)  # its latest earlier occurrence
    assert draft_bound.continuations(text, 1, 2, earliest=True)[0] == (1, 2)  # prompt lookup: the first
    assert draft_bound.continuations(text, 5, 2) == [(3, 4), (1, 2)]
    # a longer match comes first: "0 7" occurs once, before the single-token matches
    assert draft_bound.continuations([0, 7, 9, 7, 5, 0, 7], 5, 1) == [(9,), (5,)]


def test_the_oracle_never_needs_more_passes_than_one_candidate():
    prompt = [5, 1, 2, 3, 5, 1, 4, 4, 5, 1, 2, 6]
    out = [5, 1, 2, 6, 5, 1, 4, 4, 2]
    one = draft_bound.replay(prompt, out, lambda x: draft_bound.continuations(x, 1, 4))
    every = draft_bound.replay(prompt, out, lambda x: draft_bound.continuations(x, 10**9, 4))
    assert every[0] <= one[0]
    assert every[1] >= one[1]  # a tree feeds more tokens per pass
