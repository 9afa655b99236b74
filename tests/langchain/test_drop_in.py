"""Drop-in use (issue 13): ``ChatNest()`` with no datastore as the LLM of an existing LangChain RAG chain.

The chain is LangChain's own: ``create_retrieval_chain`` over an ``InMemoryVectorStore`` (MiniLM embeddings)
of the demo files, loaded with ``DirectoryLoader`` and split with ``add_start_index=True``, and
``create_stuff_documents_chain`` with a system prompt holding ``{context}``. NEST copies from the context in
the prompt; every citation must be exact in the message it came from, in the ``context`` document, and in the
file re-read from disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("langchain_classic")

from langchain_classic.chains import create_retrieval_chain  # noqa: E402
from langchain_classic.chains.combine_documents import create_stuff_documents_chain  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from nest_integrations import NestConfig  # noqa: E402
from nest_integrations.langchain import ChatNest, MiniLMEmbeddings, invoke_with_citations  # noqa: E402
from tests.langchain.conftest import corpus_dir  # noqa: E402

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer the question using the context below.\n\n{context}"), ("human", "{input}")]
)


@pytest.fixture(scope="module")
def chain(tiny_lm_or_default):
    from langchain_community.document_loaders import DirectoryLoader
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from nest_integrations.langchain import ExactTextLoader

    docs = DirectoryLoader(str(corpus_dir()), glob="*.txt", loader_cls=ExactTextLoader).load()
    splits = RecursiveCharacterTextSplitter(chunk_size=600, chunk_overlap=0, add_start_index=True).split_documents(docs)
    store = InMemoryVectorStore.from_documents(splits, MiniLMEmbeddings())
    chat = ChatNest(lm=tiny_lm_or_default, nest_config=NestConfig(max_new_tokens=48))
    assert chat.engine is None  # no datastore: context mode
    qa = create_stuff_documents_chain(chat, PROMPT)
    retriever = store.as_retriever(search_kwargs={"k": 2})
    return create_retrieval_chain(retriever, qa), chat, retriever


@pytest.fixture(scope="module")
def tiny_lm_or_default():
    from nest_integrations.models import default_model_dir, load_model

    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("default model not downloaded (run `nest download-model`)")
    return load_model(dtype="float32", device="cpu")


def test_retrieval_chain_cites_its_context_documents_exactly(chain) -> None:
    rag, _, _ = chain
    out = invoke_with_citations(rag, {"input": "Who performed the national anthem at Super Bowl 50?"})
    assert isinstance(out["answer"], str) and out["answer"]
    assert out["context"] and out["citations"], out["answer"]
    assert "Lady Gaga" in out["answer"]
    for c in out["citations"]:
        doc = out["context"][c["document_index"]]
        assert doc.page_content[c["start"] : c["end"]] == c["cited_text"]
        assert out["answer"][c["response_start"] : c["response_end"]] == c["cited_text"]
        # the splitter recorded start_index: the offsets in the file re-read from disk verify
        assert c["source_start"] is not None
        assert Path(c["source"]).read_text(encoding="utf-8")[c["source_start"] : c["source_end"]] == c["cited_text"]
    assert out["nest"]["sentences"] and out["nest"]["abstained"] is False
    assert [d.page_content for d in out["cited_documents"]] == [c["cited_text"] for c in out["citations"]]


def test_plain_chat_model_response_metadata_points_into_the_messages(chain) -> None:
    _, chat, _ = chain
    ctx = Path(corpus_dir(), "Nikola_Tesla.txt").read_text(encoding="utf-8")[:900]
    messages = [("system", "Use this context.\n\n" + ctx), ("human", "Where was Nikola Tesla born?")]
    msg = chat.invoke(messages)
    cits = msg.response_metadata["citations"]
    assert cits, msg.content
    system = "Use this context.\n\n" + ctx
    for c in cits:
        assert c["doc_id"] == "message-0"
        assert system[c["start"] : c["end"]] == c["cited_text"]


def test_prompt_without_context_is_the_plain_lm(chain) -> None:
    _, chat, _ = chain
    msg = chat.invoke("Say hello.", max_tokens=8)
    assert msg.content and msg.response_metadata["citations"] == []
    assert msg.response_metadata["abstained"] is False


def test_streaming_in_context_mode_gives_the_same_answer(chain) -> None:
    _, chat, _ = chain
    ctx = Path(corpus_dir(), "Warsaw.txt").read_text(encoding="utf-8")[:900]
    messages = [("system", "Use this context.\n\n" + ctx), ("human", "What is Warsaw?")]
    full = chat.invoke(messages)
    chunks = list(chat.stream(messages))
    assert "".join(c.content for c in chunks) == full.content
    streamed = [c for ch in chunks for c in ch.response_metadata.get("citations", [])]
    assert streamed == full.response_metadata["citations"]


QUESTIONS = [
    "Who performed the national anthem at Super Bowl 50?",
    "Where was Nikola Tesla born?",
    "What is the capital of Poland?",
    "Who was Nikola Tesla? Quote the context.",
]


def test_lossless_context_mode_equals_greedy_generate_on_the_chains_prompts(chain, tiny_lm_or_default) -> None:
    import torch

    from nest_integrations.context import generate_over_context
    from nest_integrations.langchain import CitationCollector
    from nest_integrations.prompts import render_prompt

    rag, _, _ = chain
    lm = tiny_lm_or_default
    collector = CitationCollector()
    for q in QUESTIONS:
        rag.invoke({"input": q}, config={"callbacks": [collector]})
    prompts = [c["messages"] for c in collector.calls]
    assert len(prompts) == len(QUESTIONS) and all(len(p[0]["content"]) > 600 for p in prompts)
    copied = accepted = 0
    for msgs in prompts:
        res = generate_over_context(lm, msgs, NestConfig.lossless(max_new_tokens=48))
        ids = render_prompt(lm.tokenizer, msgs)
        out = lm.model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False)[0, len(ids) :].tolist()
        eos = lm.eos_token_ids
        greedy = out[: next((i for i, t in enumerate(out) if t in eos), len(out))]
        assert res.token_ids == greedy  # token for token
        copied += res.stats.copied_tokens
        accepted += res.stats.tokens_accepted
        system = msgs[0]["content"]
        for s in res.spans:
            assert system[s.doc_start : s.doc_end] == s.text and s.doc_id == "message-0"
    assert accepted > 0 and copied > 0  # drafts were verified and kept, and a citation came out: not a plain greedy run


def test_completion_llm_in_a_string_prompt_chain_cites_its_context_documents(chain, tiny_lm_or_default) -> None:
    from langchain_core.prompts import PromptTemplate

    from nest_integrations.langchain import NestLLM

    llm = NestLLM(lm=tiny_lm_or_default, nest_config=NestConfig(max_new_tokens=48))
    assert llm.engine is None  # no datastore: context mode
    prompt = PromptTemplate.from_template("Use the context to answer.\n\n{context}\n\nQuestion: {input}\nAnswer:")
    _, _, retriever = chain
    qa = create_retrieval_chain(retriever, create_stuff_documents_chain(llm, prompt))
    out = invoke_with_citations(qa, {"input": "Who performed the national anthem at Super Bowl 50?"})
    assert "Lady Gaga" in out["answer"] and out["citations"], out["answer"]
    for c in out["citations"]:
        doc = out["context"][c["document_index"]]
        assert doc.page_content[c["start"] : c["end"]] == c["cited_text"]
        assert Path(c["source"]).read_text(encoding="utf-8")[c["source_start"] : c["source_end"]] == c["cited_text"]


def test_prompt_question_is_the_last_question_line() -> None:
    from nest_integrations.langchain.llms import prompt_question

    assert prompt_question("ctx ctx\n\nQuestion: who won?\nAnswer:") == "who won?"
    assert prompt_question("some context\nwhat is it") == "what is it"
