"""Milvus (Milvus Lite, a file in tmp_path) as the passage stage through LlamaIndex's ``MilvusVectorStore``:
index files, answer with a query engine over ``VectorStoreIndex.from_vector_store`` (and
``NestQueryEngine.from_index`` in the process that built the index), spans exact in the files re-read from
disk, documents added / changed / deleted in the collection and the datastore alike, and the bad inputs
(vectors of another size, nodes with no recoverable offsets) as typed errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("llama_index.vector_stores.milvus")
pytest.importorskip("milvus_lite")

from nest_integrations.chunks import chunks_from_documents  # noqa: E402
from nest_integrations.config import NestConfig  # noqa: E402
from nest_integrations.datastore import index_documents  # noqa: E402
from nest_integrations.demo import load_demo_documents  # noqa: E402
from nest_integrations.errors import EmbeddingSizeError, VectorStoreError  # noqa: E402
from nest_integrations.llama_index.vector_stores import (  # noqa: E402
    index_datastore,
    milvus_vector_store,
    query_engine,
    sync_index,
    unmatched_error,
)
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


def _entities(vector_store) -> dict[str, str]:
    rows = vector_store.client.query(
        vector_store.collection_name, filter='id != ""', output_fields=["id", "doc_id"], consistency_level="Strong"
    )
    return {r["id"]: r["doc_id"] for r in rows}


def _assert_nodes_exact_on_disk(nodes) -> None:
    for n in nodes:
        on_disk = Path(n.node.metadata["source"]).read_bytes().decode("utf-8")
        assert on_disk[n.node.start_char_idx : n.node.end_char_idx] == n.node.text, n.node.metadata


def test_query_engine_over_milvus_spans_exact_on_disk(tmp_path: Path, default_lm) -> None:
    from llama_index.core import VectorStoreIndex

    from nest_integrations.llama_index import MiniLMEmbedding

    _write_files(tmp_path / "docs")
    store, _ = _index(tmp_path / "docs", tmp_path / "store", default_lm)
    uri = str(tmp_path / "milvus.db")
    index_datastore(store, milvus_vector_store(uri, "li_chunks"))

    # a later process: the index comes back from the vector store alone (its docstore is empty)
    index = VectorStoreIndex.from_vector_store(milvus_vector_store(uri, "li_chunks"), embed_model=MiniLMEmbedding())
    assert set(_entities(index.vector_store)) == {c.chunk_id for c in store.chunks}
    qe = query_engine(index, store, nest_config=NestConfig(max_new_tokens=24))
    resp = qe.query(QUESTION)
    assert resp.source_nodes, resp.response
    _assert_nodes_exact_on_disk(resp.source_nodes)
    top = {n.node.node_id for n in index.as_retriever(similarity_top_k=qe.nest_config.passages).retrieve(QUESTION)}
    assert {p["chunk_id"] for p in resp.metadata["passages"]} == top  # the passages came from Milvus


def test_from_index_over_milvus(tmp_path: Path, tiny_lm) -> None:
    from nest_integrations.llama_index import NestQueryEngine

    _write_files(tmp_path / "docs")
    store, _ = _index(tmp_path / "docs", tmp_path / "store", tiny_lm)
    # the process that builds the index can keep its nodes in memory, so from_index rebuilds the chunks from them
    index = index_datastore(store, milvus_vector_store(tmp_path / "milvus.db", "li_from_index"), store_nodes=True)
    qe = NestQueryEngine.from_index(index, model=tiny_lm, nest_config=NestConfig(max_new_tokens=8))
    assert {c.chunk_id: (c.doc_id, c.doc_offset, c.text) for c in qe.engine.chunks} == {
        c.chunk_id: (c.doc_id, c.doc_offset, c.text) for c in store.chunks
    }
    resp = qe.query(QUESTION)
    ids = set(_entities(index.vector_store))
    assert resp.metadata["passages"] and {p["chunk_id"] for p in resp.metadata["passages"]} <= ids
    _assert_nodes_exact_on_disk(resp.source_nodes)


def test_add_update_delete_reflected_in_milvus_and_datastore(tmp_path: Path, tiny_lm) -> None:
    docs = tmp_path / "docs"
    files = _write_files(docs)
    store, _ = _index(docs, tmp_path / "store", tiny_lm)
    vs = milvus_vector_store(tmp_path / "milvus.db", "li_sync")
    index = index_datastore(store, vs)
    assert set(_entities(vs)) == {c.chunk_id for c in store.chunks}

    files["Super_Bowl_50"].write_text(
        files["Super_Bowl_50"].read_text(encoding="utf-8").replace("Denver Broncos", "Denver Bronx"), encoding="utf-8"
    )
    files["Nikola_Tesla"].unlink()
    (docs / "note.txt").write_text("The library opens at nine on weekdays.", encoding="utf-8")
    changed: list[str] = []
    store, report = _index(docs, tmp_path / "store", tiny_lm, prune=True, on_change=lambda k, d: changed.append(d))
    assert (report.added, report.updated, report.deleted) == (1, 1, 1)
    inserted, deleted = sync_index(index, store, changed)
    assert deleted == 3 and inserted == sum(c.doc_id in changed for c in store.chunks)

    entities = _entities(vs)
    assert entities == {c.chunk_id: c.doc_id for c in store.chunks}
    rows = vs.client.query(vs.collection_name, filter='id != ""', output_fields=["id", "text"])
    want = {c.chunk_id: c.text for c in store.chunks}
    assert {r["id"]: r["text"] for r in rows} == want
    assert any("Denver Bronx" in t for t in want.values())


def test_bad_inputs_are_typed_errors(tmp_path: Path, tiny_lm) -> None:
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode

    from nest_integrations.llama_index import MiniLMEmbedding
    from nest_integrations.llama_index.documents import LlamaIndexPassageRetriever

    uri = tmp_path / "milvus.db"
    # a collection built with another embedding size: refused before anything is written
    small = milvus_vector_store(uri, "small", dim=8)
    with pytest.raises(EmbeddingSizeError) as err:
        milvus_vector_store(uri, "small")
    assert (err.value.found, err.value.expected) == (8, 384) and "8-dimensional" in str(err.value)
    fields = {f["name"]: f for f in small.client.describe_collection("small")["fields"]}
    assert fields["embedding"]["params"]["dim"] == 8

    # nodes that are not the datastore's chunks: no chunk id, no offsets, other text
    _write_files(tmp_path / "docs", ("Super_Bowl_50",))
    store, _ = _index(tmp_path / "docs", tmp_path / "store", tiny_lm)
    foreign = TextNode(id_="foreign-1", text="The Broncos won a football game in California.", metadata={"source": "x"})
    index = VectorStoreIndex(
        [foreign],
        storage_context=StorageContext.from_defaults(vector_store=milvus_vector_store(uri, "foreign")),
        embed_model=MiniLMEmbedding(),
    )
    with pytest.raises(VectorStoreError, match="cannot be recovered") as err2:
        LlamaIndexPassageRetriever(index, store.chunks, on_unmatched=unmatched_error).retrieve(QUESTION, 2)
    assert "'x'" in str(err2.value) and "Broncos won" in str(err2.value)
    with pytest.raises(VectorStoreError):
        query_engine(index, store, nest_config=NestConfig(max_new_tokens=4)).query(QUESTION)
    with warnings.catch_warnings(record=True) as caught:  # not strict: skipped with the framework path's warning
        warnings.simplefilter("always")
        hits = LlamaIndexPassageRetriever(index, store.chunks).retrieve(QUESTION, 2)
    assert hits == [] and any("match no chunk" in str(w.message) for w in caught)
