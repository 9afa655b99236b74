"""find_spans on hand-made provenance: runs, minimum length, exact offsets."""

import numpy as np

from nest_integrations.attribution import find_spans
from nest_integrations.chunks import Chunk

CHUNK = Chunk(text="Lady Gaga sang the anthem.", chunk_id="c0", doc_id="d", doc_offset=100)
# tokens: "Lady"(0-4) " G"(4-6) "aga"(6-9) " sang"(9-14) " the"(14-18) " anthem"(18-25) "."(25-26)
OFFS = np.array([[0, 4], [4, 6], [6, 9], [9, 14], [14, 18], [18, 25], [25, 26]])


def test_runs_of_consecutive_chunk_tokens_become_spans():
    response = "It was Lady Gaga sang the anthem."
    # "It was " (no source) then chunk tokens 0..6; tokens 0-2 then a break, 3..6 continue
    sources = [None, None, (0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6)]
    pieces = ["It", " was ", "Lady", " G", "aga", " sang", " the", " anthem", "."]
    ends = list(np.cumsum([len(p) for p in pieces]))
    spans = find_spans(sources, ends, response, [CHUNK], [OFFS])
    assert len(spans) == 1
    s = spans[0]
    assert s.text == "Lady Gaga sang the anthem." and s.n_tokens == 7
    assert (s.doc_start, s.doc_end) == (100, 126)
    assert response[s.response_start : s.response_end] == s.text


def test_single_tokens_and_gaps_are_not_spans():
    response = "Lady sang"
    sources = [(0, 0), (0, 3)]  # not consecutive
    ends = [4, 9]
    assert find_spans(sources, ends, response, [CHUNK], [OFFS]) == []


def test_open_runs_are_held_back_while_streaming():
    response = "Lady Gaga"
    sources = [(0, 0), (0, 1), (0, 2)]
    ends = [4, 6, 9]
    assert find_spans(sources, ends, response, [CHUNK], [OFFS], closed_upto=3) == []
    assert len(find_spans(sources, ends, response, [CHUNK], [OFFS])) == 1
