"""Key modes: precomputed, on the fly per request, on the fly with an LRU cache — the same keys and answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nest_integrations.chunks import chunks_from_documents
from nest_integrations.config import NestConfig
from nest_integrations.datastore import Datastore
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import ConfigError

QUESTIONS = ("Who performed at Super Bowl 50?", "Where was Nikola Tesla born?", "What is the Amazon rainforest?")


@pytest.fixture(scope="module")
def corpus():
    docs = load_demo_documents()
    return docs, chunks_from_documents(docs, chunk_size=400)


def _store(tiny_lm, corpus, mode: str, **kw) -> Datastore:
    docs, chunks = corpus
    return Datastore.build(tiny_lm, chunks, documents=docs, key_mode=mode, progress=False, **kw)


def test_modes_give_the_same_keys_and_answers(tiny_lm, corpus) -> None:
    stores = {m: _store(tiny_lm, corpus, m) for m in ("precomputed", "on_the_fly", "cached")}
    assert stores["precomputed"].token_store.encoded_chunks == 0  # all encoded at build time
    idx = [0, 3, 5]
    views = {m: s.token_store.request_view(idx, [s.chunks[i].text for i in idx]) for m, s in stores.items()}
    for m in ("on_the_fly", "cached"):
        assert np.array_equal(views[m].values.numpy(), views["precomputed"].values.numpy())
        # the same encoder on the same text; only the batch shape differs (float32 rounding)
        assert np.allclose(views[m].keys.numpy(), views["precomputed"].keys.numpy(), atol=2e-3)
    cfg = NestConfig(max_new_tokens=12, abstain="off")
    for q in QUESTIONS:
        outs = {m: s.engine(cfg).generate(q) for m, s in stores.items()}
        ref = outs["precomputed"]
        for m in ("on_the_fly", "cached"):
            assert outs[m].token_ids == ref.token_ids and [x.to_dict() for x in outs[m].spans] == [
                x.to_dict() for x in ref.spans
            ]


def test_on_the_fly_encodes_per_request_and_cached_keeps_the_recent(tiny_lm, corpus) -> None:
    fly = _store(tiny_lm, corpus, "on_the_fly")
    ts = fly.token_store
    ts.request_view([0, 1], ["", ""])
    ts.request_view([0, 1], ["", ""])
    assert ts.encoded_chunks == 4 and 0 not in ts  # nothing kept
    lru = _store(tiny_lm, corpus, "cached", key_cache_chunks=2)
    ts = lru.token_store
    ts.request_view([0, 1], ["", ""])
    ts.request_view([1, 0], ["", ""])
    assert ts.encoded_chunks == 2  # the second request found both
    ts.request_view([2], [""])  # evicts the least recently used: chunk 1 (0 was used last)
    assert 2 in ts and 0 in ts and 1 not in ts
    ts.request_view([1], [""])
    assert ts.encoded_chunks == 4 and len([i for i in range(len(lru)) if i in ts]) == 2


def test_on_the_fly_datastore_saves_no_keys(tiny_lm, corpus, tmp_path: Path) -> None:
    store = _store(tiny_lm, corpus, "cached", key_cache_chunks=8)
    root = store.save(tmp_path / "s")
    man = json.loads((root / "manifest.json").read_text())
    assert man["key_mode"] == "cached" and man["key_cache_chunks"] == 8 and man["key_format"] is None
    assert not [f for f in man["files"] if f.startswith(("keys", "key_", "pq_", "token_ids", "offsets"))]
    loaded = Datastore.load(root, tiny_lm)
    assert loaded.key_mode == "cached" and loaded.key_cache_chunks == 8 and loaded.chunks == store.chunks
    cfg = NestConfig(max_new_tokens=12, abstain="off")
    ref = _store(tiny_lm, corpus, "precomputed").engine(cfg).generate(QUESTIONS[0])
    assert loaded.engine(cfg).generate(QUESTIONS[0]).token_ids == ref.token_ids


def test_bad_key_modes(tiny_lm, corpus) -> None:
    with pytest.raises(ConfigError, match="unknown key_mode"):
        _store(tiny_lm, corpus, "lazy")
    with pytest.raises(ConfigError, match="key_cache_chunks"):
        _store(tiny_lm, corpus, "cached", key_cache_chunks=0)
