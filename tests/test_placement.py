"""placement: pieces (splits, nodes) placed at verified offsets (no framework, no model)."""

from __future__ import annotations

import pytest

from nest_integrations.errors import DuplicateIdError
from nest_integrations.placement import Piece, build_chunks, char_overlap, place_pieces, preview

R = "Repeated paragraph."


def test_place_pieces_keeps_right_proposals_and_repairs_wrong_ones() -> None:
    text = f"{R}\n\n{R}\n\n{R}\n"
    starts = [0, len(R) + 2, 2 * len(R) + 4]
    assert place_pieces(text, [(R, s) for s in starts]) == starts
    assert place_pieces(text, [(R, None)] * 3) == starts  # missing
    assert place_pieces(text, [(R, 0)] * 3) == starts  # str.find from the start: always the first copy
    assert place_pieces(text, [(R, 0), (R, 999), (R, -1)]) == starts  # out of range
    assert place_pieces(text, [(R, None), ("not there", 0), (R, None)]) == [0, None, len(R) + 2]


def test_place_pieces_picks_the_copies_that_cover_the_text() -> None:
    # piece 1 holds the first copy of R; pieces 2 and 3 are the next two copies. Searching from just
    # after the previous piece's start (what LlamaIndex does) puts piece 2 on the first copy, inside
    # piece 1, and leaves the third copy uncovered.
    head = "Intro sentence. " + R
    text = f"{head}\n\n{R}\n\n{R}\n"
    pieces = [(head, 0), (R, text.find(R)), (R, text.find(R, text.find(R) + 1))]
    c2, c3 = text.find(R, len(head)), text.rfind(R)
    assert place_pieces(text, pieces) == [0, c2, c3]
    assert place_pieces(text, [(p, None) for p, _ in pieces]) == [0, c2, c3]


def test_place_pieces_with_known_overlap() -> None:
    # without overlap the next piece cannot start inside the previous one
    text = "x R y R"
    assert place_pieces(text, [("x R", 0), ("R", None)], overlap=0) == [0, 6]
    assert place_pieces(text, [("x R", 0), ("R", None)], overlap=None) in ([0, 2], [0, 6])
    assert place_pieces(text, [("x R", 0), ("R", 6)], overlap=None) == [0, 6]  # a right proposal is kept


def test_place_pieces_out_of_order_and_many_pieces() -> None:
    text = "alpha beta gamma"
    assert place_pieces(text, [("gamma", None), ("alpha", None)]) == [11, 0]
    periodic = "ab " * 3000
    pieces = [("ab ab", None)] * 1500
    out = place_pieces(periodic, pieces)
    assert all(o is not None and periodic[o : o + 5] == "ab ab" for o in out)
    assert out == sorted(set(out))  # type: ignore[type-var]


def test_build_chunks_reports_and_rejects_duplicates() -> None:
    texts = {"d": "one two three"}
    pieces = [
        Piece("d:0", "d", "one", 0, {"start_index": 5}, offset_key="start_index"),
        Piece("d:1", "d", "TWO", None, {}),
        Piece("d:2", "d", "three", 4, {}),
    ]
    chunks, problems = build_chunks(pieces, texts)
    assert [(c.chunk_id, c.doc_offset) for c in chunks] == [("d:0", 0), ("d:2", 8)]
    assert chunks[0].metadata == {"start_index": 0}
    assert len(problems) == 1 and problems[0].startswith("d:1: split text 'TWO' does not occur")
    with pytest.raises(DuplicateIdError):
        build_chunks([pieces[0], pieces[0]], texts)


def test_char_overlap_of_splitters() -> None:
    from langchain_text_splitters import CharacterTextSplitter, RecursiveCharacterTextSplitter

    from nest_integrations.langchain.text_splitter import BoundaryTextSplitter

    assert char_overlap(RecursiveCharacterTextSplitter(chunk_size=100, chunk_overlap=30)) == 30
    assert char_overlap(BoundaryTextSplitter(100, 0)) == 0
    assert char_overlap(CharacterTextSplitter(chunk_size=100, chunk_overlap=5, length_function=lambda t: len(t) // 4)) is None
    assert char_overlap(None) is None and char_overlap(object()) is None


def test_preview_shortens() -> None:
    assert preview("short") == "'short'"
    long = preview("x" * 100, width=20)
    assert long.endswith("...'") and len(long) == 22
