"""LlamaIndex reader → node parser → NEST datastore → answers whose spans are exact in the files on disk."""

from __future__ import annotations

import pytest

from nest_integrations.config import NestConfig
from nest_integrations.datastore import Datastore
from tests.langchain.test_pipeline import QUESTIONS, assert_spans_exact_on_disk, write_corpus

pytest.importorskip("llama_index.core")


@pytest.fixture(scope="module")
def li_store(default_lm, tmp_path_factory):
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.node_parser import SentenceSplitter

    from nest_integrations.llama_index import chunks_from_llama_index

    folder = tmp_path_factory.mktemp("li-corpus")
    write_corpus(folder)
    docs = SimpleDirectoryReader(str(folder), filename_as_id=True).load_data()
    nodes = SentenceSplitter(chunk_size=256, chunk_overlap=20).get_nodes_from_documents(docs)
    documents, chunks, problems = chunks_from_llama_index(docs, nodes)
    assert problems == []
    return Datastore.build(default_lm, chunks, documents=documents, progress=False)


def test_llama_index_pipeline_spans_exact_in_files(li_store: Datastore) -> None:
    engine = li_store.engine(NestConfig(max_new_tokens=48))
    assert sum(assert_spans_exact_on_disk(engine.generate(q)) for q in QUESTIONS) > 0


def test_vector_store_index_as_passage_stage(li_store: Datastore) -> None:
    from llama_index.core import VectorStoreIndex

    from nest_integrations.llama_index import LlamaIndexPassageRetriever, MiniLMEmbedding, chunks_to_llama_index

    index = VectorStoreIndex(chunks_to_llama_index(li_store.chunks), embed_model=MiniLMEmbedding())
    engine = li_store.engine(
        NestConfig(max_new_tokens=32, passages=3), retriever=LlamaIndexPassageRetriever(index, li_store.chunks)
    )
    result = engine.generate(QUESTIONS[0])
    expected = [n.node.node_id for n in index.as_retriever(similarity_top_k=3).retrieve(QUESTIONS[0])]
    assert [p.chunk_id for p in result.passages] == expected
    assert_spans_exact_on_disk(result)
