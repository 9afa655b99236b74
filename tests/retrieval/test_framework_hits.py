"""framework_hits: a framework retriever's results mapped back to the chunk list (no framework, no model)."""

from __future__ import annotations

import warnings

import pytest

from nest_integrations.chunks import Chunk
from nest_integrations.retrieval.framework_hits import ChunkLookup, RetrievedItem, collect_hits


def test_chunk_lookup_follows_a_growing_list() -> None:
    chunks = [Chunk("alpha", "a", "d", 0), Chunk("beta", "b", "d", 6)]
    lookup = ChunkLookup(chunks)
    assert lookup.by_id("b") == 1 and lookup.by_text("alpha") == 0
    assert lookup.by_position("d", 6, "beta") == 1 and lookup.by_position("d", 6, "other") is None
    chunks.append(Chunk("gamma", "c", "e", 0))
    assert lookup.by_id("c") == 2 and lookup.by_text("gamma") == 2 and lookup.by_position("e", 0, "gamma") == 2
    del chunks[:]
    chunks.append(Chunk("delta", "x", "f", 0))
    assert lookup.by_id("a") is None and lookup.by_text("delta") == 0
    assert lookup.by_id(None) is None and lookup.by_position("d", True, "alpha") is None


def test_collect_hits_scores() -> None:
    items = [RetrievedItem(3, "t", {}, 0.9), RetrievedItem(1, "u", {}, 0.5), RetrievedItem(3, "t", {}, 0.4)]
    hits = collect_hits(items, 5, lambda: 10, None, "X")
    assert [(h.index, h.score) for h in hits] == [(3, 0.9), (1, 0.5)]
    items.append(RetrievedItem(None, "v", {}, None))
    with pytest.warns(UserWarning, match="^1 document"):
        hits = collect_hits(items, 5, lambda: 10, None, "X")
    assert [(h.index, h.score) for h in hits] == [(3, 1.0), (1, 0.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert collect_hits(items, 1, lambda: 10, None, "X")[0].index == 3
        assert [h.index for h in collect_hits(items, 5, lambda: 10, lambda t, m: 7, "X")] == [3, 1, 7]


def test_collect_hits_checks_the_callback_index() -> None:
    items = [RetrievedItem(None, "v", {}, None)]
    with pytest.raises(ValueError, match="not a position in the chunk list"):
        collect_hits(items, 5, lambda: 3, lambda t, m: 3, "X")
    with pytest.raises(ValueError, match="not a position"):
        collect_hits(items, 5, lambda: 3, lambda t, m: True, "X")  # type: ignore[arg-type,return-value]
    assert collect_hits(items, 5, lambda: 3, lambda t, m: None, "X") == []
