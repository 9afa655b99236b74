"""Drop-in use (issue 13): ``Settings.llm = NestLLM()`` (no datastore) under LlamaIndex's own
``VectorStoreIndex.as_query_engine()``, in compact and refine modes.

The index is LlamaIndex's: ``SimpleDirectoryReader`` over the demo files, ``SentenceSplitter``, a
``VectorStoreIndex`` with MiniLM embeddings. NEST copies from the nodes the synthesizer put into the prompt;
:func:`query_with_citations` puts the copies into ``Response.source_nodes`` / ``metadata["citations"]``, and every
citation must be exact in its node, in its document (``start_char_idx`` / ``end_char_idx``) and in the file
re-read from disk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.schema import NodeRelationship  # noqa: E402

from nest_integrations import NestConfig  # noqa: E402
from nest_integrations.llama_index import MiniLMEmbedding, NestLLM, aquery_with_citations, query_with_citations  # noqa: E402
from nest_integrations.llama_index.llms import template_context_segments, template_query  # noqa: E402
from tests.langchain.conftest import corpus_dir  # noqa: E402

QUESTION = "Who performed the national anthem at Super Bowl 50?"


@pytest.fixture(scope="module")
def index(default_lm):
    docs = SimpleDirectoryReader(str(corpus_dir()), filename_as_id=True).load_data()
    for d in docs:  # the temporary folder's random name must not move the embeddings (the prompt keeps it)
        d.excluded_embed_metadata_keys = list(d.metadata)
    embed = MiniLMEmbedding()
    idx = VectorStoreIndex.from_documents(
        docs, transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=0)], embed_model=embed
    )
    llm = NestLLM(lm=default_lm, nest_config=NestConfig(max_new_tokens=48))
    assert llm.engine is None  # no datastore: context mode
    old = Settings._llm  # the public getter would resolve a default (OpenAI) LLM
    Settings.llm = llm
    yield idx
    Settings._llm = old


def _assert_exact(response) -> None:
    cits = response.metadata["citations"]
    assert cits and len(response.source_nodes) == len(cits), str(response)
    retrieved = {n.node.node_id: n.node for n in response.metadata["retrieved_nodes"]}
    for c, span in zip(cits, response.source_nodes, strict=True):
        node = retrieved[c["node_id"]]
        assert node.text[c["node_start"] : c["node_end"]] == c["cited_text"] == span.node.text
        assert str(response)[c["response_start"] : c["response_end"]] == c["cited_text"]
        body = Path(node.metadata["file_path"]).read_text(encoding="utf-8")
        assert body[c["start_char_idx"] : c["end_char_idx"]] == c["cited_text"]
        assert (c["source_start"], c["source_end"]) == (c["start_char_idx"], c["end_char_idx"])
        assert span.node.relationships[NodeRelationship.PARENT].node_id == node.node_id
        assert span.node.relationships[NodeRelationship.SOURCE].node_id == node.ref_doc_id


def test_default_query_engine_cites_the_retrieved_nodes_exactly(index) -> None:
    qe = index.as_query_engine(similarity_top_k=2)  # compact, the default
    response = query_with_citations(qe, QUESTION)
    assert "Lady Gaga" in str(response)
    _assert_exact(response)
    assert response.metadata["abstained"] is False and response.metadata["sentences"]


def test_refine_mode_citations_are_exact_through_every_refine_call(index) -> None:
    # refine calls the LLM once per node, the later calls with the answer so far in the prompt; a span copied
    # from that answer keeps the citation it had. (Known miss, in the notes: on the first node alone the support
    # score is under the threshold, the first call abstains, and the answer comes from the second node.)
    qe = index.as_query_engine(similarity_top_k=2, response_mode="refine")
    response = query_with_citations(qe, QUESTION)
    assert str(response).strip()
    _assert_exact(response)


def test_async_query_gives_the_same_citations(index) -> None:
    qe = index.as_query_engine(similarity_top_k=2)
    sync = query_with_citations(qe, QUESTION)
    response = asyncio.run(aquery_with_citations(qe, QUESTION))
    assert str(response) == str(sync)
    assert response.metadata["citations"] == sync.metadata["citations"]


def test_plain_query_engine_answer_carries_citations_into_the_prompt(index) -> None:
    # without the helper the answer is still NEST's; the LLM's own response holds citations into its prompt
    llm = Settings.llm
    ctx = "\n\n".join(n.node.text for n in index.as_retriever(similarity_top_k=2).retrieve(QUESTION))
    prompt = f"Context information is below.\n---------------------\n{ctx}\n---------------------\nQuery: {QUESTION}\nAnswer: "
    out = llm.complete(prompt)
    assert out.additional_kwargs["citations"], out.text
    for c in out.additional_kwargs["citations"]:
        assert c["doc_id"] == "message-0" and prompt[c["start_char_idx"] : c["end_char_idx"]] == c["cited_text"]
        assert ctx in prompt and prompt.find(ctx) <= c["start_char_idx"]


def test_template_parsing_finds_the_context_block_and_the_query() -> None:
    msgs = [{"role": "user", "content": "Context information is below.\n-----\nx\n----------\nABC def\n----------\nQuery: who?\nAnswer: "}]
    segs = template_context_segments(msgs)
    assert [msgs[0]["content"][s.start : s.end] for s in segs] == ["ABC def\n"]
    assert template_query(msgs) == "who?"
    # no template: a long message is context, a short question is not
    long = [{"role": "system", "content": "word " * 60}, {"role": "user", "content": "What?"}]
    assert [s.message_index for s in template_context_segments(long)] == [0]


def test_prompt_without_context_is_the_plain_lm(index) -> None:
    out = Settings.llm.complete("Say hello.", max_tokens=8)
    assert out.text and out.additional_kwargs["citations"] == []
