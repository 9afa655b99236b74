"""LlamaIndex: conversation-aware retrieval (NestLLM.chat, index.as_chat_engine()), support labels, abstention.

Default model over four hand-written biographies (tests/langchain/biographies.py): the follow-up
"Who was her father?" alone retrieves the Marie Curie document; after "Where was Ada Lovelace born?"
the follow-up must retrieve the Ada Lovelace document.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.llms import ChatMessage, MessageRole  # noqa: E402

from nest_integrations.config import NestConfig  # noqa: E402
from nest_integrations.llama_index import MiniLMEmbedding, NestLLM, NestQueryEngine  # noqa: E402
from nest_integrations.llama_index.llms import parse_condense_prompt  # noqa: E402
from tests.langchain.biographies import (  # noqa: E402
    BIOGRAPHIES,
    DISTRACTOR,
    FIRST,
    FOLLOW_UP,
    OFF_TOPIC,
    SUBJECT,
)

LABELS = ("copied", "grounded", "unsupported")
ANSWER_KEYS = (
    "citations", "sentences", "abstained", "abstain_reason", "truncated", "finish_reason", "relevance", "retrieval_query", "passages",
)


def _documents() -> list[Document]:
    return [Document(text=text, id_=doc_id) for doc_id, text in BIOGRAPHIES.items()]


@pytest.fixture(scope="module")
def bio_index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(_documents(), embed_model=MiniLMEmbedding())


@pytest.fixture(scope="module")
def bio_llm(default_lm, bio_index: VectorStoreIndex) -> NestLLM:
    return NestLLM.from_index(bio_index, model=default_lm, documents=_documents(), max_new_tokens=48)


@pytest.fixture(scope="module")
def first_turn(bio_llm: NestLLM):
    return bio_llm.chat([ChatMessage(role=MessageRole.USER, content=FIRST)])


def _conversation(first_turn) -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.USER, content=FIRST),
        ChatMessage(role=MessageRole.ASSISTANT, content=first_turn.message.content),
        ChatMessage(role=MessageRole.USER, content=FOLLOW_UP),
    ]


def assert_labels(meta: dict, text: str) -> None:
    sents = meta["sentences"]
    assert sents and all(s["support"] in LABELS for s in sents)
    assert all(0 <= s["response_start"] < s["response_end"] <= len(text) for s in sents)
    assert meta["truncated"] == (meta["finish_reason"] == "length")


def test_chat_first_turn(first_turn) -> None:
    extra = first_turn.additional_kwargs
    assert extra["retrieval_query"] == FIRST
    assert extra["passages"][0]["doc_id"] == SUBJECT
    assert extra["abstained"] is False
    assert extra["citations"] and {c["doc_id"] for c in extra["citations"]} == {SUBJECT}
    assert_labels(extra, first_turn.message.content)


def test_chat_follow_up_retrieves_and_cites_the_conversation_subject(bio_llm: NestLLM, first_turn) -> None:
    response = bio_llm.chat(_conversation(first_turn))
    extra = response.additional_kwargs
    assert extra["retrieval_query"] == f"{FOLLOW_UP}\n{FIRST}"
    assert extra["passages"][0]["doc_id"] == SUBJECT
    assert extra["abstained"] is False
    assert extra["citations"] and {c["doc_id"] for c in extra["citations"]} == {SUBJECT}
    text = response.message.content
    for c in extra["citations"]:
        assert BIOGRAPHIES[SUBJECT][c["start_char_idx"] : c["end_char_idx"]] == c["cited_text"]
        assert text[c["response_start"] : c["response_end"]] == c["cited_text"]
    assert_labels(extra, text)
    # the follow-up alone retrieves someone else
    last = NestLLM(engine=bio_llm.engine, nest_config=bio_llm.nest_config, max_new_tokens=8, conversation_query="last_user")
    alone = last.chat(_conversation(first_turn)).additional_kwargs
    assert alone["retrieval_query"] == FOLLOW_UP and alone["passages"][0]["doc_id"] == DISTRACTOR


def test_stream_chat_and_achat_equal_chat(bio_llm: NestLLM, first_turn) -> None:
    msgs = _conversation(first_turn)
    full = bio_llm.chat(msgs)
    pieces = list(bio_llm.stream_chat(msgs))
    assert len(pieces) > 1
    assert "".join(p.delta or "" for p in pieces) == full.message.content == pieces[-1].message.content
    for key in ANSWER_KEYS:
        assert pieces[-1].additional_kwargs[key] == full.additional_kwargs[key], key
    achat = asyncio.run(bio_llm.achat(msgs))
    assert achat.message.content == full.message.content
    assert achat.additional_kwargs["citations"] == full.additional_kwargs["citations"]


def test_parse_condense_prompt() -> None:
    from llama_index.core.chat_engine import condense_plus_context, condense_question

    history = f"user: {FIRST}\nassistant: She was born in London.\nIt was in 1815."
    expected = [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": "She was born in London.\nIt was in 1815."},
        {"role": "user", "content": FOLLOW_UP},
    ]
    for template in (condense_plus_context.DEFAULT_CONDENSE_PROMPT_TEMPLATE, condense_question.DEFAULT_TEMPLATE):
        assert parse_condense_prompt(template.format(chat_history=history, question=FOLLOW_UP)) == expected
    assert parse_condense_prompt(f"{FIRST}\n{FOLLOW_UP}") is None
    mine = "History:\n{chat_history}\nRewrite: {question}"
    assert parse_condense_prompt(mine.format(chat_history=history, question=FOLLOW_UP)) is None
    assert parse_condense_prompt(mine.format(chat_history=history, question=FOLLOW_UP), [mine]) == expected


def test_condense_prompt_is_answered_with_the_condensed_query(bio_llm: NestLLM) -> None:
    from llama_index.core.chat_engine import condense_plus_context

    prompt = condense_plus_context.DEFAULT_CONDENSE_PROMPT_TEMPLATE.format(
        chat_history=f"user: {FIRST}\nassistant: In London.", question=FOLLOW_UP
    )
    response = bio_llm.complete(prompt)
    assert response.text == f"{FOLLOW_UP}\n{FIRST}"
    assert response.additional_kwargs["condensed_question"] is True
    assert [r.text for r in bio_llm.stream_complete(prompt)] == [response.text]
    off = NestLLM(engine=bio_llm.engine, nest_config=bio_llm.nest_config, max_new_tokens=8, condense_questions=False)
    decoded = off.complete(prompt)
    assert "condensed_question" not in decoded.additional_kwargs and "nest_stats" in decoded.additional_kwargs


def test_as_chat_engine_retrieves_the_subject_for_the_follow_up(bio_llm: NestLLM, bio_index: VectorStoreIndex) -> None:
    old = Settings._llm
    Settings.llm = bio_llm
    try:
        chat_engine = bio_index.as_chat_engine(similarity_top_k=1)
        first = chat_engine.chat(FIRST)
        assert [n.node.ref_doc_id for n in first.source_nodes] == [SUBJECT]
        follow_up = chat_engine.chat(FOLLOW_UP)
        assert [n.node.ref_doc_id for n in follow_up.source_nodes] == [SUBJECT]
        assert str(follow_up).strip()
        # the async path too (a fresh conversation)
        chat_engine.reset()
        asyncio.run(chat_engine.achat(FIRST))
        again = asyncio.run(chat_engine.achat(FOLLOW_UP))
        assert [n.node.ref_doc_id for n in again.source_nodes] == [SUBJECT]
    finally:
        Settings._llm = old
    # without the conversation the index's retriever finds someone else's father
    alone = bio_index.as_retriever(similarity_top_k=1).retrieve(FOLLOW_UP)
    assert [n.node.ref_doc_id for n in alone] == [DISTRACTOR]


@pytest.fixture(scope="module")
def bio_query_engine(default_lm) -> NestQueryEngine:
    return NestQueryEngine.from_documents(_documents(), model=default_lm, nest_config=NestConfig(max_new_tokens=48, passages=2))


def test_query_engine_metadata_has_labels(bio_query_engine: NestQueryEngine) -> None:
    response = bio_query_engine.query(FIRST)
    meta = response.metadata
    assert meta["abstained"] is False
    assert_labels(meta, str(response))
    assert response.source_nodes and {n.node.ref_doc_id for n in response.source_nodes} == {SUBJECT}
    cited_chunks = {n.node.metadata["chunk_id"] for n in response.source_nodes}
    copied = [s for s in meta["sentences"] if s["support"] == "copied"]
    assert copied and all(set(s["chunk_ids"]) <= cited_chunks for s in copied)


def test_query_engine_abstains_without_source_nodes(bio_query_engine: NestQueryEngine) -> None:
    cfg = bio_query_engine.nest_config
    response = bio_query_engine.query(OFF_TOPIC)
    assert str(response) == cfg.abstain_message
    assert response.source_nodes == []
    meta = response.metadata
    assert meta["abstained"] is True and meta["finish_reason"] == "abstained" and meta["truncated"] is False
    assert meta["relevance"] < cfg.abstain_threshold
    assert meta["abstain_reason"] == "retrieval"
    assert [s["support"] for s in meta["sentences"]] == ["unsupported"]
    streaming = NestQueryEngine(engine=bio_query_engine.engine, nest_config=cfg, streaming=True).query(OFF_TOPIC)
    assert "".join(streaming.response_gen) == cfg.abstain_message
    assert streaming.source_nodes == [] and streaming.metadata["abstained"] is True


def test_nest_llm_complete_abstains_and_truncates(bio_llm: NestLLM) -> None:
    off = bio_llm.complete(OFF_TOPIC)
    assert off.additional_kwargs["abstained"] is True and off.additional_kwargs["citations"] == []
    short = bio_llm.complete(FIRST, max_new_tokens=3)
    assert short.additional_kwargs["truncated"] is True and short.additional_kwargs["finish_reason"] == "length"
