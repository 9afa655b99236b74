"""datastore.sync: a saved datastore kept in step with documents (new, changed, unchanged, pruned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nest_integrations.chunks import Document, chunks_from_documents
from nest_integrations.datastore import Datastore, SyncReport, has_datastore, index_documents, sync_documents
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import DatastoreError, EmptyCorpusError


def _index(path: Path, lm, docs: list[Document], **kwargs) -> tuple[Datastore, SyncReport]:  # type: ignore[no-untyped-def]
    return index_documents(path, lm, chunks_from_documents(docs, chunk_size=400), docs, **kwargs)


def test_index_then_sync_added_updated_unchanged_pruned(tiny_lm, tmp_path: Path) -> None:
    demo = load_demo_documents()
    a, b, c = demo[0], demo[1], Document("note.txt", "The library opens at nine on weekdays.", {"source": "note.txt"})
    path = tmp_path / "store"
    assert not has_datastore(path)
    store, report = _index(path, tiny_lm, [a, b])
    assert has_datastore(path) and report == SyncReport(added=2)
    assert store.doc_ids == [a.doc_id, b.doc_id]
    first_keys = store.keys_of(0).keys.copy()

    # nothing changed: nothing re-encoded, same chunks
    store, report = _index(path, tiny_lm, [a, b])
    assert report == SyncReport(unchanged=2) and report.summary() == "0 added, 0 updated, 2 unchanged, 0 deleted"
    assert (store.keys_of(0).keys == first_keys).all()

    # one changed, one new; b not given and no prune: b stays
    changed = Document(a.doc_id, a.text.replace("Denver Broncos", "Denver Bronx"), a.metadata)
    store, report = _index(path, tiny_lm, [changed, c])
    assert report == SyncReport(added=1, updated=1)
    loaded = Datastore.load(path, tiny_lm)
    assert set(loaded.doc_ids) == {a.doc_id, b.doc_id, c.doc_id}
    assert loaded.documents[a.doc_id].text == changed.text
    assert all(changed.text[ch.doc_offset : ch.doc_offset + len(ch.text)] == ch.text for ch in loaded.chunks if ch.doc_id == a.doc_id)

    # prune drops what is not given
    store, report = _index(path, tiny_lm, [changed, c], prune=True)
    assert report == SyncReport(unchanged=2, deleted=1)
    assert set(Datastore.load(path, tiny_lm).doc_ids) == {a.doc_id, c.doc_id}

    # rebuild starts from scratch
    store, report = _index(path, tiny_lm, [b], rebuild=True)
    assert report == SyncReport(added=1) and Datastore.load(path, tiny_lm).doc_ids == [b.doc_id]


def test_sync_in_memory_and_its_errors(tiny_lm) -> None:
    demo = load_demo_documents()
    store = Datastore.from_documents(demo[:2], tiny_lm, chunk_size=400, progress=False)
    with pytest.raises(EmptyCorpusError):
        sync_documents(store, [])
    # too many tokens for the store's limit: refused before any key is computed, the store unchanged
    small = Datastore(tiny_lm, list(store.chunks), max_tokens=10)
    with pytest.raises(DatastoreError, match="before computing keys"):
        sync_documents(small, chunks_from_documents([demo[2]]))
    assert small.doc_ids == store.doc_ids
    # the given documents are added before anything is pruned, so a sync never empties the store
    note = Document("x", "unrelated text")
    report = sync_documents(store, chunks_from_documents([note]), [note], prune=True)
    assert report == SyncReport(added=1, deleted=2)
    assert store.doc_ids == ["x"] and store.documents["x"] == note


def test_default_caps_streamed_build_vs_update(tiny_lm, tmp_path: Path, monkeypatch) -> None:
    """A new datastore (keys streamed to disk) is capped by DEFAULT_MAX_STREAMED_TOKENS, not by the in-memory
    DEFAULT_MAX_TOKENS; an update (new chunks encoded in memory) by DEFAULT_MAX_TOKENS."""
    from nest_integrations.datastore import builder, sync

    demo = load_demo_documents()
    a, b = demo[0], demo[1]
    monkeypatch.setattr(builder, "DEFAULT_MAX_STREAMED_TOKENS", 50)
    with pytest.raises(DatastoreError, match="max_tokens"):
        _index(tmp_path / "small-cap", tiny_lm, [a])
    assert not has_datastore(tmp_path / "small-cap")
    monkeypatch.setattr(builder, "DEFAULT_MAX_STREAMED_TOKENS", 10**7)
    monkeypatch.setattr(builder, "DEFAULT_MAX_TOKENS", 50)
    monkeypatch.setattr(sync, "DEFAULT_MAX_TOKENS", 50)
    store, report = _index(tmp_path / "store", tiny_lm, [a])  # far more than 50 tokens: the streamed cap applies
    assert report.added == 1 and store.n_tokens > 50 and store.max_tokens == 50
    with pytest.raises(DatastoreError, match="max_tokens"):
        _index(tmp_path / "store", tiny_lm, [a, b])  # the update encodes b in memory: capped at 50
    store, report = _index(tmp_path / "store", tiny_lm, [a, b], max_tokens=10**6)  # an explicit cap wins
    assert report.added == 1
