"""Milvus (Milvus Lite, a file in tmp_path) as the passage stage through langchain-milvus's ``Milvus`` store:
index files, answer with ``ChatNest.from_retriever``, spans exact in the files re-read from disk, documents
added / changed / deleted in the collection and the datastore alike, and the bad inputs (vectors of another
size, documents with no recoverable offsets, a bad target) as typed errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("langchain_milvus")
pytest.importorskip("milvus_lite")

from nest_integrations.chunks import chunks_from_documents  # noqa: E402
from nest_integrations.datastore import index_documents  # noqa: E402
from nest_integrations.demo import load_demo_documents  # noqa: E402
from nest_integrations.errors import ConfigError, EmbeddingSizeError, VectorStoreError  # noqa: E402
from nest_integrations.langchain.vector_stores import MilvusChunkStore, parse_vector_store  # noqa: E402
from nest_integrations.loading import load_documents  # noqa: E402

QUESTION = "Who won Super Bowl 50?"


def _write_files(folder: Path, ids: tuple[str, ...] = ("Super_Bowl_50", "Nikola_Tesla")) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    docs = {d.doc_id: d.text for d in load_demo_documents()}
    out = {}
    for doc_id in ids:
        path = folder / f"{doc_id.lower()}.txt"
        path.write_bytes(docs[doc_id][:2500].encode("utf-8"))
        out[doc_id] = path
    return out


def _index(folder: Path, store_dir: Path, lm, **kwargs):
    documents, _ = load_documents([folder])
    chunks = chunks_from_documents(documents, chunk_size=500)
    return index_documents(store_dir, lm, chunks, documents, **kwargs)


def _assert_exact_on_disk(citations: list[dict]) -> None:
    for c in citations:
        on_disk = Path(c["source"]).read_bytes().decode("utf-8")  # re-read: exactly the bytes on disk
        assert on_disk[c["start"] : c["end"]] == c["cited_text"], c


def test_answer_from_milvus_spans_exact_on_disk(tmp_path: Path, default_lm) -> None:
    from nest_integrations.langchain import ChatNest

    _write_files(tmp_path / "docs")
    store, _ = _index(tmp_path / "docs", tmp_path / "store", default_lm)
    milvus = MilvusChunkStore(tmp_path / "milvus.db", "lc_chunks")
    report = milvus.sync(store)
    assert report.added == len(store.chunks) == milvus.count() == report.total
    assert milvus.ids() == {c.chunk_id for c in store.chunks}

    chat = ChatNest.from_retriever(milvus.store.as_retriever(), store, max_tokens=24)
    msg = chat.invoke(QUESTION)
    citations = msg.response_metadata["citations"]
    assert citations, msg.content
    _assert_exact_on_disk(citations)
    top = {d.metadata["nest_chunk_id"] for d in milvus.store.similarity_search(QUESTION, k=chat.engine.config.passages)}
    assert {p["chunk_id"] for p in msg.response_metadata["passages"]} == top  # the passages came from Milvus

    # the strict path (what `nest ask --vector-store` uses) gives the same passages
    strict = milvus.chat_model(store, max_tokens=24)
    msg2 = strict.invoke(QUESTION)
    assert {p["chunk_id"] for p in msg2.response_metadata["passages"]} == top
    _assert_exact_on_disk(msg2.response_metadata["citations"])


def test_add_update_delete_reflected_in_milvus_and_datastore(tmp_path: Path, tiny_lm) -> None:
    docs = tmp_path / "docs"
    files = _write_files(docs)
    store, _ = _index(docs, tmp_path / "store", tiny_lm)
    milvus = MilvusChunkStore(str(tmp_path / "m" / "milvus.db"), "lc_sync")
    milvus.sync(store)
    assert milvus.ids() == {c.chunk_id for c in store.chunks}

    # one file changed, one new, one removed (pruned)
    files["Super_Bowl_50"].write_text(
        files["Super_Bowl_50"].read_text(encoding="utf-8").replace("Denver Broncos", "Denver Bronx"), encoding="utf-8"
    )
    files["Nikola_Tesla"].unlink()
    (docs / "note.txt").write_text("The library opens at nine on weekdays.", encoding="utf-8")
    changed: list[tuple[str, str]] = []
    store, report = _index(docs, tmp_path / "store", tiny_lm, prune=True, on_change=lambda k, d: changed.append((k, d)))
    assert (report.added, report.updated, report.deleted) == (1, 1, 1)
    assert sorted(k for k, _ in changed) == ["added", "deleted", "updated"]
    synced = milvus.sync(store, [d for _, d in changed])
    assert not synced.rewritten and synced.total == len(store.chunks)

    want = {c.chunk_id: c for c in store.chunks}
    assert milvus.ids() == set(want)
    tesla = [d for k, d in changed if k == "deleted"][0]
    assert milvus.ids(tesla) == set() and tesla not in store.doc_ids
    rows = milvus.client.query(milvus.collection, filter='pk != ""', output_fields=["pk", "text", "start_index"])
    for r in rows:  # new texts and offsets for the changed document, and every entity is a datastore chunk
        c = want[r["pk"]]
        assert (r["text"], r["start_index"]) == (c.text, c.doc_offset)
    assert any("Denver Bronx" in r["text"] for r in rows) and not any("Denver Broncos" in r["text"] for r in rows)

    # a collection that does not match its datastore (here: emptied) is rewritten on the next sync
    milvus.clear()
    again = milvus.sync(store, [])
    assert again.rewritten and milvus.ids() == set(want)


def test_collection_of_another_embedding_size_is_refused(tmp_path: Path) -> None:
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_milvus import Milvus

    from nest_integrations.langchain.vector_stores import milvus_connection_args

    uri = tmp_path / "milvus.db"
    other = Milvus(
        DeterministicFakeEmbedding(size=8), connection_args=milvus_connection_args(uri), collection_name="small",
        auto_id=False, enable_dynamic_field=True, primary_field="pk", text_field="text", vector_field="vector",
    )  # fmt: skip
    other.add_documents([Document(page_content="eight dimensions", metadata={})], ids=["x"])
    with pytest.raises(EmbeddingSizeError) as err:
        MilvusChunkStore(uri, "small")
    assert (err.value.found, err.value.expected, err.value.collection) == (8, 384, "small")
    assert "8-dimensional" in str(err.value) and "384" in str(err.value)
    assert isinstance(err.value, VectorStoreError)
    assert other.client.query("small", filter='pk != ""', output_fields=["pk"])[0]["pk"] == "x"  # nothing written


def test_documents_without_offsets_are_a_clear_error(tmp_path: Path, tiny_lm) -> None:
    from langchain_core.documents import Document

    from nest_integrations.langchain.documents import LangChainPassageRetriever

    _write_files(tmp_path / "docs", ("Super_Bowl_50",))
    store, _ = _index(tmp_path / "docs", tmp_path / "store", tiny_lm)
    milvus = MilvusChunkStore(tmp_path / "milvus.db", "foreign")
    # documents that are not the datastore's chunks: no chunk id, no source + start_index, other text
    milvus.store.add_documents(
        [Document(page_content="The Broncos won a football game in California.", metadata={"source": "elsewhere"})],
        ids=["foreign-1"],
    )
    with pytest.raises(VectorStoreError, match="foreign-1") as err:
        milvus.passage_retriever(store).retrieve(QUESTION, 2)
    assert "elsewhere" in str(err.value) and "cannot be recovered" in str(err.value)
    # ChatNest.from_retriever's adapter keeps the framework path: skipped, with a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = LangChainPassageRetriever(milvus.store.as_retriever(), store.chunks).retrieve(QUESTION, 2)
    assert hits == [] and any("match no chunk" in str(w.message) for w in caught)
    # an empty collection cannot serve a datastore
    with pytest.raises(VectorStoreError, match="missing or empty"):
        MilvusChunkStore(tmp_path / "milvus.db", "never_filled").engine(store)


def test_bad_targets(tmp_path: Path) -> None:
    assert parse_vector_store("milvus:./x.db") == "./x.db"
    assert parse_vector_store("milvus:http://127.0.0.1:19530") == "http://127.0.0.1:19530"
    for bad in ("chroma:./x", "./x.db", "milvus:"):
        with pytest.raises(ConfigError):
            parse_vector_store(bad)
    with pytest.raises(ConfigError, match=r"\.db"):
        MilvusChunkStore(tmp_path / "x.sqlite")
