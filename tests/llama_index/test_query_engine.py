"""NestQueryEngine / NestLLM / NestRetriever over real files read with SimpleDirectoryReader (default model)."""

from __future__ import annotations

import asyncio
import functools

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import NodeRelationship, TextNode  # noqa: E402

from nest_integrations.config import NestConfig  # noqa: E402
from nest_integrations.errors import EmptyCorpusError, PromptTooLongError  # noqa: E402
from nest_integrations.llama_index import (  # noqa: E402
    CopiedSpanEvent,
    MiniLMEmbedding,
    NestLLM,
    NestQueryEngine,
    NestRetriever,
)
from tests.langchain.conftest import corpus_dir  # noqa: E402

QUESTION = "Who was Nikola Tesla?"  # answered with a copied span (citations are >= 3 words)


@functools.lru_cache(maxsize=1)
def _documents():
    return SimpleDirectoryReader(str(corpus_dir()), filename_as_id=True).load_data()


@pytest.fixture(scope="module")
def query_engine(default_lm) -> NestQueryEngine:
    return NestQueryEngine.from_documents(
        _documents(), node_parser=SentenceSplitter(chunk_size=200, chunk_overlap=20), model=default_lm,
        nest_config=NestConfig(max_new_tokens=32),
    )  # fmt: skip


def assert_nodes_exact(response) -> int:
    for n in response.source_nodes:
        node = n.node
        with open(node.metadata["file_path"], encoding="utf-8", newline="") as f:
            assert f.read()[node.start_char_idx : node.end_char_idx] == node.text
        assert str(response)[node.metadata["response_start"] : node.metadata["response_end"]] == node.text
        assert node.relationships[NodeRelationship.SOURCE].node_id == node.metadata["doc_id"]
    return len(response.source_nodes)


def test_source_nodes_are_exact_copied_spans(query_engine: NestQueryEngine) -> None:
    response = query_engine.query(QUESTION)
    assert assert_nodes_exact(response) > 0
    assert response.metadata["finish_reason"] in ("eos", "length", "stop", "sentence")
    assert response.metadata["abstained"] is False
    assert response.metadata["truncated"] == (response.metadata["finish_reason"] == "length")


def test_streaming_equals_non_streaming(query_engine: NestQueryEngine) -> None:
    full = query_engine.query(QUESTION)
    streaming = NestQueryEngine(engine=query_engine.engine, nest_config=query_engine.nest_config, streaming=True)
    sr = streaming.query(QUESTION)
    pieces = list(sr.response_gen)
    assert len(pieces) > 1 and "".join(pieces) == str(full)
    assert [(n.node.text, n.node.start_char_idx) for n in sr.source_nodes] == [
        (n.node.text, n.node.start_char_idx) for n in full.source_nodes
    ]


def test_one_event_per_copied_span(query_engine: NestQueryEngine) -> None:
    seen: list[CopiedSpanEvent] = []

    class Collect(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "Collect"

        def handle(self, event, **kwargs) -> None:
            if isinstance(event, CopiedSpanEvent):
                seen.append(event)

    root = get_dispatcher()
    handler = Collect()
    root.add_event_handler(handler)
    try:
        response = query_engine.query(QUESTION)
    finally:
        root.event_handlers.remove(handler)
    assert seen and [e.cited_text for e in seen] == [n.node.text for n in response.source_nodes]


def test_async_queries_run_concurrently(query_engine: NestQueryEngine) -> None:
    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(query_engine.aquery(QUESTION), query_engine.aquery("Who won Super Bowl 50?"))
        done = True
        await t
        return ticks, results

    ticks, results = asyncio.run(main())
    assert ticks > 10
    assert str(results[0]) == str(query_engine.query(QUESTION))
    for r in results:
        assert_nodes_exact(r)


def test_settings_llm_in_a_standard_query_engine(default_lm) -> None:
    from llama_index.core import Settings

    docs = _documents()
    index = VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())
    llm = NestLLM.from_index(index, model=default_lm, documents=docs, max_new_tokens=32)
    old = Settings._llm
    Settings.llm = llm
    try:
        response = index.as_query_engine(similarity_top_k=2).query(QUESTION)
    finally:
        Settings._llm = old
    assert str(response).strip()
    assert llm.metadata.context_window == default_lm.context_window and llm.metadata.model_name
    # the LLM's own citations (what the synthesizer saw) are exact in the files
    c = llm.complete(f"Context:\n{response.source_nodes[0].node.get_content()}\n\nQuestion: {QUESTION}")
    for cit in c.additional_kwargs["citations"]:
        doc = next(d for d in docs if d.doc_id == cit["doc_id"])
        with open(doc.metadata["file_path"], encoding="utf-8", newline="") as f:
            assert f.read()[cit["start_char_idx"] : cit["end_char_idx"]] == cit["cited_text"]
    chunks = list(llm.stream_complete("Super Bowl 50 was"))
    assert chunks[-1].text == "".join(ch.delta for ch in chunks)


def test_from_index_and_retriever(default_lm) -> None:
    index = VectorStoreIndex.from_documents(_documents(), embed_model=MiniLMEmbedding())
    qe = NestQueryEngine.from_index(index, model=default_lm, documents=_documents(), nest_config=NestConfig(max_new_tokens=24))
    response = qe.query(QUESTION)
    assert_nodes_exact(response)
    nodes = NestRetriever(qe.engine, similarity_top_k=3).retrieve(QUESTION)
    assert len(nodes) == 3 and all(n.node.text == next(c.text for c in qe.engine.chunks if c.chunk_id == n.node.node_id) for n in nodes)


def test_bad_input(default_lm, query_engine: NestQueryEngine) -> None:
    empty = VectorStoreIndex([], embed_model=MiniLMEmbedding())
    with pytest.raises(EmptyCorpusError, match="no nodes"):
        NestQueryEngine.from_index(empty, model=default_lm)
    # a node without offsets: cited relative to the node itself, still exact
    node = TextNode(text="The Quimper lantern festival is held every year in March.", id_="n1")
    assert node.start_char_idx is None
    index = VectorStoreIndex([node], embed_model=MiniLMEmbedding())
    qe = NestQueryEngine.from_index(index, model=default_lm, nest_config=NestConfig(max_new_tokens=16))
    r = qe.query("When is the Quimper lantern festival held?")
    for n in r.source_nodes:
        assert node.text[n.node.start_char_idx : n.node.end_char_idx] == n.node.text
        assert n.node.metadata["offsets_relative_to"] == "node"
    with pytest.raises(PromptTooLongError):
        query_engine.query("why " * 9000)
