"""Datastore: persistence (round trip, damage, versions, atomic saves), updates, size limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nest_integrations.chunks import Chunk, Document, chunks_from_documents
from nest_integrations.config import NestConfig
from nest_integrations.datastore import FORMAT_VERSION, Datastore
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import DatastoreError


def _docs(n: int = 2) -> list[Document]:
    return load_demo_documents()[:n]


@pytest.fixture
def tiny_store(tiny_lm) -> Datastore:
    return Datastore.from_documents(_docs(2), tiny_lm, chunk_size=400, progress=False)


def _keys(store: Datastore) -> list:
    return [store.keys_of(i) for i in range(len(store))]


def test_round_trip_keys_and_chunks(tiny_store: Datastore, tiny_lm, tmp_path: Path) -> None:
    tiny_store.save(tmp_path / "s")
    loaded = Datastore.load(tmp_path / "s", tiny_lm)
    assert loaded.chunks == tiny_store.chunks
    assert {k: d.text for k, d in loaded.documents.items()} == {d.doc_id: d.text for d in _docs(2)}
    assert loaded.key_layer == tiny_store.key_layer
    for a, b in zip(_keys(tiny_store), _keys(loaded), strict=True):
        assert np.array_equal(a.token_ids, b.token_ids)
        assert np.array_equal(a.offsets, b.offsets)
        assert np.array_equal(a.keys, b.keys) and b.keys.dtype == np.float16
    # keys are memory-mapped, not read into memory
    assert isinstance(_keys(loaded)[0].keys.base, np.memmap) or isinstance(_keys(loaded)[0].keys, np.memmap)
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert man["format_version"] == 1 and man["fingerprint"]["key_layer"] == -2  # float16 keys: version 1
    assert man["n_tokens"] == tiny_store.n_tokens
    assert not list((tmp_path / "s").rglob("*.pkl"))


def test_damaged_and_foreign_stores(tiny_store: Datastore, tiny_lm, tmp_path: Path) -> None:
    root = tiny_store.save(tmp_path / "s")
    gen = root / json.loads((root / "manifest.json").read_text())["generation"]
    keys = gen / "keys.npy"
    data = keys.read_bytes()
    # one flipped byte, same size: checksum
    keys.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(DatastoreError, match="checksum mismatch"):
        Datastore.load(root, tiny_lm)
    # truncated key file
    keys.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatastoreError, match="truncated"):
        Datastore.load(root, tiny_lm)
    keys.write_bytes(data)
    Datastore.load(root, tiny_lm)
    # newer format version
    man = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(dict(man, format_version=FORMAT_VERSION + 1)))
    with pytest.raises(DatastoreError, match="newer than this nest-integrations supports"):
        Datastore.load(root, tiny_lm)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(DatastoreError, match="unreadable manifest"):
        Datastore.load(root, tiny_lm)
    with pytest.raises(DatastoreError, match="not a datastore"):
        Datastore.load(tmp_path, tiny_lm)
    with pytest.raises(DatastoreError, match="no such datastore"):
        Datastore.load(tmp_path / "nope", tiny_lm)


@pytest.mark.parametrize("crash_after", ["chunks.jsonl", "token_ids.npy", "keys.npy", "generation"])
def test_crash_mid_save_keeps_previous_store(tiny_store: Datastore, tiny_lm, tmp_path: Path, crash_after: str) -> None:
    root = tiny_store.save(tmp_path / "s")
    before = len(tiny_store)
    tiny_store.add(chunks_from_documents([load_demo_documents()[2]], chunk_size=400))
    assert len(tiny_store) > before
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_store.save(root, _fail_after=crash_after)
    loaded = Datastore.load(root, tiny_lm)
    assert len(loaded) == before
    # the next save succeeds and cleans up what the crash left
    tiny_store.save(root)
    assert len(Datastore.load(root, tiny_lm)) == len(tiny_store)
    assert sorted(p.name for p in root.iterdir() if p.name != "manifest.json") == [
        json.loads((root / "manifest.json").read_text())["generation"]
    ]


def test_size_limit_stops_before_any_key_is_computed(tiny_lm, monkeypatch: pytest.MonkeyPatch) -> None:
    from nest_integrations.store import KeyEncoder

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("keys were computed")

    monkeypatch.setattr(KeyEncoder, "encode", boom)
    with pytest.raises(DatastoreError, match="stopped before computing keys"):
        Datastore.from_documents(_docs(1), tiny_lm, max_tokens=50, progress=False)


def test_update_errors(tiny_store: Datastore) -> None:
    doc = _docs(1)[0]
    with pytest.raises(DatastoreError, match="already in the datastore"):
        tiny_store.add(chunks_from_documents([doc]))
    with pytest.raises(DatastoreError, match="no such document"):
        tiny_store.delete("nope")
    with pytest.raises(DatastoreError, match="other documents"):
        tiny_store.update(doc.doc_id, [Chunk("x y", "c", "other", 0)])
    with pytest.raises(DatastoreError, match="empty"):
        tiny_store.delete(tiny_store.doc_ids)


# ---- on the real default model ------------------------------------------------------------------

QUESTION = "When is the Quimper lantern festival held?"
NEW_DOC = Document(
    "festival.txt",
    "The Quimper lantern festival is held every year on the third Saturday of March. Thousands of paper "
    "lanterns are floated down the Odet river at dusk.",
    {"source": "festival.txt"},
)


def test_saved_store_answers_identically(default_lm, tmp_path: Path) -> None:
    store = Datastore.from_documents(_docs(2), default_lm, progress=False)
    cfg = NestConfig(max_new_tokens=32)
    before = store.engine(cfg).generate("Who won Super Bowl 50?")
    store.save(tmp_path / "s")
    loaded = Datastore.load(tmp_path / "s", default_lm)
    after = loaded.engine(cfg).generate("Who won Super Bowl 50?")
    assert after.text == before.text
    assert [s.to_dict() for s in after.spans] == [s.to_dict() for s in before.spans]
    assert [p.chunk_id for p in after.passages] == [p.chunk_id for p in before.passages]


def test_other_model_is_refused(default_lm, tiny_lm, tmp_path: Path) -> None:
    Datastore.from_documents(_docs(1), tiny_lm, progress=False).save(tmp_path / "s")
    with pytest.raises(DatastoreError, match="built with another model"):
        Datastore.load(tmp_path / "s", default_lm)


def test_add_delete_update_change_answers(default_lm, tmp_path: Path) -> None:
    store = Datastore.from_documents(_docs(2), default_lm, progress=False)
    cfg = NestConfig(max_new_tokens=24, passages=2)
    without = store.engine(cfg).generate(QUESTION)
    assert all(p.doc_id != NEW_DOC.doc_id for p in without.passages)

    store.add(chunks_from_documents([NEW_DOC]))
    with_doc = store.engine(cfg).generate(QUESTION)
    assert with_doc.passages[0].doc_id == NEW_DOC.doc_id
    new_spans = [s for s in with_doc.spans if s.doc_id == NEW_DOC.doc_id]
    assert new_spans, with_doc.text
    assert all(NEW_DOC.text[s.doc_start : s.doc_end] == s.text for s in new_spans)

    changed = Document(NEW_DOC.doc_id, NEW_DOC.text.replace("third Saturday of March", "first Sunday of June"))
    store.update(NEW_DOC.doc_id, chunks_from_documents([changed]))
    updated = store.engine(cfg).generate(QUESTION)
    assert updated.passages[0].doc_id == NEW_DOC.doc_id
    new_spans = [s for s in updated.spans if s.doc_id == NEW_DOC.doc_id]
    assert new_spans, updated.text  # the answer still copies from the document, now from its new text
    assert all(changed.text[s.doc_start : s.doc_end] == s.text for s in new_spans)
    assert "third Saturday" not in updated.text

    # survives a save / load, and delete removes the document from answers
    store.save(tmp_path / "s")
    store = Datastore.load(tmp_path / "s", default_lm)
    assert store.delete(NEW_DOC.doc_id) == 1
    gone = store.engine(cfg).generate(QUESTION)
    assert all(p.doc_id != NEW_DOC.doc_id for p in gone.passages)
    assert all(s.doc_id != NEW_DOC.doc_id for s in gone.spans)


def test_a_50mb_document_is_split_exactly_and_refused_before_key_building(tiny_lm, monkeypatch) -> None:
    from langchain_core.documents import Document as LCDocument

    from nest_integrations.langchain.documents import chunks_from_langchain
    from nest_integrations.store import KeyEncoder

    base = "\n\n".join(d.text for d in load_demo_documents()) + "\n\n"
    text = (base * (50_000_000 // len(base) + 1))[:50_000_000]
    docs, chunks, problems = chunks_from_langchain([LCDocument(page_content=text, metadata={"source": "big.txt"})])
    assert problems == [] and len(docs) == 1
    assert all(text[c.doc_offset : c.doc_offset + len(c.text)] == c.text for c in chunks)
    assert sum(len(c.text) for c in chunks) > 0.95 * len(text.replace("\n\n", ""))

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("keys were computed")

    monkeypatch.setattr(KeyEncoder, "encode", boom)
    with pytest.raises(DatastoreError, match="before computing keys"):
        Datastore.build(tiny_lm, chunks, max_tokens=1_000_000, progress=False)
    # within the character bound, tokens are counted and the limit still holds
    with pytest.raises(DatastoreError, match="more than 20,000 tokens"):
        Datastore.build(tiny_lm, chunks[:200], max_tokens=20_000, progress=False)
