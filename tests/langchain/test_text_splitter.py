"""BoundaryTextSplitter: the default splitter, a LangChain TextSplitter whose chunks know their ranges."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_text_splitters")

from nest_integrations.errors import ConfigError  # noqa: E402
from nest_integrations.langchain.text_splitter import BoundaryTextSplitter  # noqa: E402

TEXT = "First sentence here. Second one, with a clause; and more.\n\nNext paragraph is short.\n\n" * 4


@pytest.mark.parametrize(("size", "overlap"), [(40, 0), (40, 10), (80, 0), (200, 50), (15, 5)])
def test_spans_are_exact_trimmed_bounded_and_cover_the_text(size: int, overlap: int) -> None:
    splitter = BoundaryTextSplitter(size, overlap)
    spans = splitter.split_spans(TEXT)
    assert splitter.split_text(TEXT) == [TEXT[s:e] for s, e in spans]
    covered = [False] * len(TEXT)
    for s, e in spans:
        piece = TEXT[s:e]
        assert piece == piece.strip() and piece
        assert len(piece) <= size or " " not in piece
        covered[s:e] = [True] * (e - s)
    assert all(c or ch.isspace() for c, ch in zip(covered, TEXT, strict=True))
    starts = [s for s, _ in spans]
    assert starts == sorted(set(starts))


def test_cuts_at_the_coarsest_boundary_in_the_window() -> None:
    text = "Alpha beta gamma. Delta epsilon zeta.\n\nEta theta iota kappa."
    assert BoundaryTextSplitter(50).split_text(text) == ["Alpha beta gamma. Delta epsilon zeta.", "Eta theta iota kappa."]
    # a boundary in the first quarter of the window is not used: the next kind is
    assert BoundaryTextSplitter(40).split_text("Hi.\n\nThis sentence is long enough. And another one here.") == [
        "Hi.\n\nThis sentence is long enough.",
        "And another one here.",
    ]
    assert BoundaryTextSplitter(5).split_text("supercalifragilistic") == ["super", "calif", "ragil", "istic"]


def test_create_documents_gives_exact_start_index_where_find_would_not() -> None:
    text = "abc. abc. abc. abc."
    splitter = BoundaryTextSplitter(5, 3, add_start_index=True)
    docs = splitter.create_documents([text], [{"source": "s"}])
    spans = splitter.split_spans(text)
    assert [(d.page_content, d.metadata["start_index"]) for d in docs] == [(text[s:e], s) for s, e in spans]
    assert all(d.metadata["source"] == "s" for d in docs)
    assert len({d.metadata["start_index"] for d in docs}) == len(docs)  # identical pieces, distinct places
    assert "start_index" not in BoundaryTextSplitter(5, 3).create_documents([text])[0].metadata


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        BoundaryTextSplitter(0)
    with pytest.raises(ValueError):
        BoundaryTextSplitter(10, -1)
    with pytest.raises(ConfigError, match="smaller than chunk_size"):
        BoundaryTextSplitter(10, 10)
