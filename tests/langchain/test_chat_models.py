"""ChatNest / NestLLM / NestRetriever in real LangChain chains, on the default model over real files."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_community")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402

from nest_integrations.errors import ConfigError, ModelNotFoundError, NestError  # noqa: E402
from nest_integrations.langchain import (  # noqa: E402
    ChatNest,
    NestLLM,
    NestRetriever,
    UnsupportedMessageError,
    citations_to_documents,
)
from tests.langchain.conftest import shared_chat_engine  # noqa: E402

QUESTION = "Who won Super Bowl 50?"


@pytest.fixture(scope="module")
def chat() -> ChatNest:
    return ChatNest(engine=shared_chat_engine(), max_tokens=32)


def assert_citations_exact(message: AIMessage) -> int:
    """Every citation re-checked against the file on disk and against the response text."""
    text = message.text
    for c in message.response_metadata["citations"]:
        assert "index" not in c
        with open(c["source"], encoding="utf-8", newline="") as f:
            assert f.read()[c["start"] : c["end"]] == c["cited_text"]
        assert text[c["response_start"] : c["response_end"]] == c["cited_text"]
    return len(message.response_metadata["citations"])


def test_invoke_cites_exact_spans(chat: ChatNest) -> None:
    msg = chat.invoke(QUESTION)
    assert assert_citations_exact(msg) > 0
    assert msg.usage_metadata["output_tokens"] > 0 and msg.usage_metadata["input_tokens"] > 0
    assert msg.response_metadata["model_name"] == "SmolLM2-135M-Instruct"


def test_stream_merges_to_the_invoked_message(chat: ChatNest) -> None:
    full = chat.invoke(QUESTION)
    chunks = list(chat.stream(QUESTION))
    assert len(chunks) > 1
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == full.content
    assert merged.response_metadata["citations"] == full.response_metadata["citations"]
    assert merged.usage_metadata == full.usage_metadata


def test_v1_output_carries_citation_annotations() -> None:
    chat = ChatNest(engine=shared_chat_engine(), max_tokens=32, output_version="v1")
    msg = chat.invoke(QUESTION)
    blocks = [b for b in msg.content if b["type"] == "text"]
    anns = [a for b in blocks for a in b.get("annotations", [])]
    assert anns and all(a["type"] == "citation" for a in anns)
    cites = msg.response_metadata["citations"]
    assert [(a["start_index"], a["end_index"], a["cited_text"]) for a in anns] == [
        (c["response_start"], c["response_end"], c["cited_text"]) for c in cites
    ]
    streamed = None
    for c in chat.stream(QUESTION):
        streamed = c if streamed is None else streamed + c
    assert streamed.text == msg.text


def test_lcel_rag_chain(chat: ChatNest) -> None:
    """prompt | ChatNest | StrOutputParser, with context from NestRetriever in the prompt (RA-NEST style)."""
    retriever = NestRetriever(engine=chat.engine, k=2)
    prompt = ChatPromptTemplate.from_messages(
        [("human", "Answer from the context.\n\nContext:\n{context}\n\nQuestion: {question}")]
    )
    fmt = lambda docs: "\n\n".join(d.page_content for d in docs)  # noqa: E731
    chain = {"context": retriever | fmt, "question": RunnablePassthrough()} | prompt | chat | StrOutputParser()
    answer = chain.invoke(QUESTION)
    assert isinstance(answer, str) and answer.strip()
    # the same chain without the parser keeps the citations, exact in the files
    msg = ({"context": retriever | fmt, "question": RunnablePassthrough()} | prompt | chat).invoke(QUESTION)
    assert msg.text == answer
    assert_citations_exact(msg)


def test_answer_with_sources_chain(chat: ChatNest) -> None:
    chain = chat | (lambda m: {"answer": m.text, "sources": citations_to_documents(m)})
    out = chain.invoke(QUESTION)
    assert out["sources"]
    for d in out["sources"]:
        with open(d.metadata["source"], encoding="utf-8", newline="") as f:
            assert f.read()[d.metadata["start"] : d.metadata["end"]] == d.page_content
        assert out["answer"][d.metadata["response_start"] : d.metadata["response_end"]] == d.page_content


def test_async_does_not_block_the_event_loop(chat: ChatNest) -> None:
    async def main() -> tuple[int, AIMessage, int]:
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        msg = await chat.ainvoke(QUESTION)
        n_chunks = 0
        async for _ in chat.astream(QUESTION):
            n_chunks += 1
        stop = True
        await t
        return ticks, msg, n_chunks

    ticks, msg, n_chunks = asyncio.run(main())
    assert ticks > 10  # the loop kept running while the model generated
    assert n_chunks > 1
    assert assert_citations_exact(msg) > 0


def test_bad_input(chat: ChatNest) -> None:
    with pytest.raises(UnsupportedMessageError, match="empty"):
        chat.invoke([])
    with pytest.raises(UnsupportedMessageError, match="tool"):
        chat.invoke([HumanMessage("hi"), AIMessage("x"), ToolMessage("42", tool_call_id="1")])
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(UnsupportedMessageError, match="image_url"):
        chat.invoke([HumanMessage(content=[{"type": "text", "text": "what is this?"}, image])])
    with pytest.raises(UnsupportedMessageError, match="no user message"):
        chat.invoke([SystemMessage("be brief")])
    with pytest.raises(ConfigError, match="non-empty"):
        chat.invoke("hi", stop=[""])
    with pytest.raises(ConfigError, match="temperature"):
        ChatNest(engine=chat.engine, temperature=0.8)
    with pytest.raises(ConfigError, match="context_min_chars must be positive"):
        ChatNest(lm=chat.engine.lm, context_min_chars=0)
    with pytest.raises(ModelNotFoundError):
        ChatNest(model="/no/such/model")  # context mode loads its model now: a missing one is a clear error
    assert issubclass(UnsupportedMessageError, NestError)


def test_stop_and_max_tokens(chat: ChatNest) -> None:
    full = chat.invoke(QUESTION)
    words = full.text.split()
    assert len(words) > 3
    stop_word = words[2]
    cut = chat.invoke(QUESTION, stop=[stop_word])
    assert stop_word not in cut.text and full.text.startswith(cut.text)
    # usage counts the answer's tokens only: none of the stop string's, none after it; streamed alike
    assert 0 < cut.usage_metadata["output_tokens"] < full.usage_metadata["output_tokens"]
    assert cut.usage_metadata["output_tokens"] == cut.response_metadata["nest_stats"]["output_tokens"]
    merged = None
    for c in chat.stream(QUESTION, stop=[stop_word]):
        merged = c if merged is None else merged + c
    assert merged is not None and merged.content == cut.content and merged.usage_metadata == cut.usage_metadata
    short = chat.invoke(QUESTION, max_tokens=4)
    assert short.usage_metadata["output_tokens"] <= 4


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


def test_nest_llm_generation_info_and_callbacks() -> None:
    llm = NestLLM(engine=shared_chat_engine(), max_tokens=24)
    res = llm.generate(["Super Bowl 50 was an American football game"])
    gen = res.generations[0][0]
    for c in gen.generation_info["citations"]:
        assert gen.text[c["response_start"] : c["response_end"]] == c["cited_text"]
        with open(c["source"], encoding="utf-8", newline="") as f:
            assert f.read()[c["start"] : c["end"]] == c["cited_text"]
    handler = _Tokens()
    streamed = "".join(llm.stream("Super Bowl 50 was an American football game", config={"callbacks": [handler]}))
    assert streamed == gen.text
    assert "".join(handler.tokens) == gen.text and len(handler.tokens) > 1


def test_from_retriever_uses_the_vector_store(chat: ChatNest) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from nest_integrations.datastore import Datastore
    from nest_integrations.langchain import MiniLMEmbeddings, chunks_to_langchain

    engine = chat.engine
    store = Datastore(engine.lm, engine.chunks, keys=[engine.token_store.get(i) for i in range(len(engine.chunks))])
    vs = InMemoryVectorStore.from_documents(chunks_to_langchain(store.chunks), MiniLMEmbeddings())
    from_vs = ChatNest.from_retriever(vs, store, max_tokens=24)
    msg = from_vs.invoke(QUESTION)
    top = {d.id for d in vs.similarity_search(QUESTION, k=from_vs.engine.config.passages)}
    assert {p["chunk_id"] for p in msg.response_metadata["passages"]} == top
    assert_citations_exact(msg)
