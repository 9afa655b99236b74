"""ChatNest / NestLLM: conversation-aware retrieval, support labels, abstention and truncation in the metadata.

Default model over four hand-written biographies (tests/langchain/biographies.py): the follow-up
"Who was her father?" alone retrieves the Marie Curie document; after "Where was Ada Lovelace born?"
the condensed query must retrieve, and cite, the Ada Lovelace document.
"""

from __future__ import annotations

import importlib

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from nest_integrations.config import NestConfig
from nest_integrations.langchain import ChatNest, NestLLM, NestRetriever
from tests.langchain.biographies import (
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


@pytest.fixture(scope="module")
def bio_chat(default_lm) -> ChatNest:
    """ChatNest over the biographies (one chunk each), two passages per request."""
    docs = [Document(page_content=text, metadata={"source": doc_id}) for doc_id, text in BIOGRAPHIES.items()]
    chat = ChatNest.from_documents(docs, model=default_lm, nest_config=NestConfig(passages=2), max_tokens=48)
    assert sorted(c.doc_id for c in chat.engine.chunks) == sorted(BIOGRAPHIES)
    return chat


@pytest.fixture(scope="module")
def first_turn(bio_chat: ChatNest) -> AIMessage:
    return bio_chat.invoke(FIRST)


def conversation(first_turn: AIMessage) -> list[BaseMessage]:
    return [HumanMessage(FIRST), AIMessage(first_turn.text), HumanMessage(FOLLOW_UP)]


def assert_labels(meta: dict, text: str) -> None:
    """The support labels cover the answer's sentences, in order, with valid values."""
    sents = meta["sentences"]
    assert sents and all(s["support"] in LABELS for s in sents)
    assert all(0 <= s["response_start"] < s["response_end"] <= len(text) for s in sents)
    assert [s["response_start"] for s in sents] == sorted(s["response_start"] for s in sents)
    for s in sents:
        assert "index" not in s  # streamed lists must merge by concatenation
        if s["support"] in ("copied", "grounded"):
            assert len(s["chunk_ids"]) == 1
    assert meta["truncated"] == (meta["finish_reason"] == "length")


def test_first_turn_cites_the_subject(first_turn: AIMessage) -> None:
    meta = first_turn.response_metadata
    assert meta["retrieval_query"] == FIRST
    assert meta["passages"][0]["doc_id"] == SUBJECT
    assert meta["abstained"] is False and meta["abstain_reason"] is None
    assert meta["citations"] and {c["doc_id"] for c in meta["citations"]} == {SUBJECT}
    assert_labels(meta, first_turn.text)


def test_follow_up_retrieves_and_cites_the_conversation_subject(bio_chat: ChatNest, first_turn: AIMessage) -> None:
    msg = bio_chat.invoke(conversation(first_turn))
    meta = msg.response_metadata
    # the default (condensed) query: the follow-up, then the earlier question that names the subject
    assert meta["retrieval_query"] == f"{FOLLOW_UP}\n{FIRST}"
    assert meta["passages"][0]["doc_id"] == SUBJECT
    assert meta["abstained"] is False
    assert meta["citations"] and {c["doc_id"] for c in meta["citations"]} == {SUBJECT}
    for c in meta["citations"]:
        assert BIOGRAPHIES[SUBJECT][c["start"] : c["end"]] == c["cited_text"]
        assert msg.text[c["response_start"] : c["response_end"]] == c["cited_text"]
    assert_labels(meta, msg.text)


def test_old_retrieval_query_modes_still_work(bio_chat: ChatNest, first_turn: AIMessage) -> None:
    """The follow-up alone finds the wrong person: what the condensed default fixes."""
    msgs = conversation(first_turn)
    last = ChatNest(engine=bio_chat.engine, nest_config=bio_chat.nest_config, max_tokens=8, retrieval_query="last_user_message")
    meta = last.invoke(msgs).response_metadata
    assert meta["retrieval_query"] == FOLLOW_UP
    assert meta["passages"][0]["doc_id"] == DISTRACTOR
    every = ChatNest(engine=bio_chat.engine, nest_config=bio_chat.nest_config, max_tokens=8, retrieval_query="all_user_messages")
    assert every.invoke(msgs).response_metadata["retrieval_query"] == f"{FIRST}\n{FOLLOW_UP}"
    # the config's conversation_query is the default of ChatNest.retrieval_query
    cfg = bio_chat.nest_config.replace(conversation_query="last_user")
    assert ChatNest(engine=bio_chat.engine, nest_config=cfg, max_tokens=8).invoke(msgs).response_metadata[
        "retrieval_query"
    ] == FOLLOW_UP
    # ... and an explicit retrieval_query wins over it
    explicit = ChatNest(engine=bio_chat.engine, nest_config=cfg, max_tokens=8, retrieval_query="condensed")
    assert explicit.invoke(msgs).response_metadata["retrieval_query"] == f"{FOLLOW_UP}\n{FIRST}"


def _merged(chunks: list) -> BaseMessage:
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    return merged


def test_stream_of_a_follow_up_merges_to_invoke(bio_chat: ChatNest, first_turn: AIMessage) -> None:
    msgs = conversation(first_turn)
    full = bio_chat.invoke(msgs)
    chunks = list(bio_chat.stream(msgs))
    assert len(chunks) > 1
    merged = _merged(chunks)
    assert merged.content == full.content
    for key in ANSWER_KEYS:
        assert merged.response_metadata[key] == full.response_metadata[key], key
    # the labels come once, with the last chunk
    assert "sentences" in chunks[-1].response_metadata
    assert sum("sentences" in c.response_metadata for c in chunks) == 1


def test_create_history_aware_retriever(bio_chat: ChatNest, first_turn: AIMessage) -> None:
    chains = None
    for name in ("langchain.chains", "langchain_classic.chains"):
        try:
            chains = importlib.import_module(name)
            break
        except ImportError:
            continue
    if chains is None:
        pytest.skip("create_history_aware_retriever needs `langchain` (langchain.chains) or `langchain-classic`")
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

    retriever = NestRetriever(engine=bio_chat.engine, k=1)
    # the contextualising prompt of LangChain's conversational RAG tutorial
    system = (
        "Given a chat history and the latest user question which might reference context in the chat history, "
        "formulate a standalone question which can be understood without the chat history. Do NOT answer the "
        "question, just reformulate it if needed and otherwise return it as is."
    )
    prompt = ChatPromptTemplate.from_messages([("system", system), MessagesPlaceholder("chat_history"), ("human", "{input}")])
    chain = chains.create_history_aware_retriever(bio_chat, retriever, prompt)
    assert [d.metadata["doc_id"] for d in chain.invoke({"input": FIRST, "chat_history": []})] == [SUBJECT]
    history = [HumanMessage(FIRST), AIMessage(first_turn.text)]
    docs = chain.invoke({"input": FOLLOW_UP, "chat_history": history})
    assert [d.metadata["doc_id"] for d in docs] == [SUBJECT]
    # without the history the same retriever finds someone else's father
    assert [d.metadata["doc_id"] for d in retriever.invoke(FOLLOW_UP)] == [DISTRACTOR]


def test_off_topic_question_abstains_without_citations(bio_chat: ChatNest) -> None:
    msg = bio_chat.invoke(OFF_TOPIC)
    meta = msg.response_metadata
    cfg = bio_chat.nest_config
    assert meta["abstained"] is True and meta["finish_reason"] == "abstained" and meta["truncated"] is False
    assert msg.text == cfg.abstain_message
    assert meta["abstain_reason"] == "retrieval"
    assert meta["citations"] == []
    assert meta["relevance"] is not None and meta["relevance"] < cfg.abstain_threshold
    assert [s["support"] for s in meta["sentences"]] == ["unsupported"]
    merged = _merged(list(bio_chat.stream(OFF_TOPIC)))
    assert merged.content == msg.content
    for key in ANSWER_KEYS:
        assert merged.response_metadata[key] == meta[key], key
    v1 = ChatNest(engine=bio_chat.engine, nest_config=cfg, output_version="v1").invoke(OFF_TOPIC)
    assert all(not b.get("annotations") for b in v1.content if isinstance(b, dict))
    # abstention off: the same question is answered (whatever its support)
    answered = bio_chat.invoke(OFF_TOPIC, abstain="off")
    assert answered.response_metadata["abstained"] is False and answered.text != cfg.abstain_message


def test_truncated_answer_is_flagged(bio_chat: ChatNest) -> None:
    msg = bio_chat.invoke(FIRST, max_tokens=3)
    meta = msg.response_metadata
    assert meta["finish_reason"] == "length" and meta["truncated"] is True
    assert msg.usage_metadata["output_tokens"] == 3
    complete = bio_chat.invoke(FIRST)
    assert complete.response_metadata["truncated"] is False


def test_nest_llm_generation_info_has_labels(bio_chat: ChatNest) -> None:
    llm = NestLLM(engine=bio_chat.engine, nest_config=bio_chat.nest_config, chat_template=True, max_tokens=48)
    gen = llm.generate([FIRST]).generations[0][0]
    info = gen.generation_info
    assert info["abstained"] is False
    assert info["citations"] and {c["doc_id"] for c in info["citations"]} == {SUBJECT}
    assert_labels(info, gen.text)
    chunks = list(llm._stream(FIRST))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.text == gen.text
    for key in ("citations", "sentences", "abstained", "truncated", "finish_reason", "relevance"):
        assert merged.generation_info[key] == info[key], key
    off = llm.generate([OFF_TOPIC]).generations[0][0]
    assert off.generation_info["abstained"] is True and off.generation_info["citations"] == []
    assert off.text == bio_chat.nest_config.abstain_message
