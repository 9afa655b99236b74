"""LangChain loader → splitter → NEST datastore → answers whose spans are exact in the files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from nest_integrations.config import NestConfig
from nest_integrations.datastore import Datastore
from nest_integrations.demo import load_demo_documents

pytest.importorskip("langchain_community")

QUESTIONS = ["Who won Super Bowl 50?", "Where was Nikola Tesla born?"]


def write_corpus(folder: Path) -> dict[str, str]:
    """Three demo articles as files: one with CRLF line ends, one with a repeated paragraph."""
    docs = {d.doc_id: d.text for d in load_demo_documents()[:3]}
    texts = {
        "super_bowl.txt": docs["Super_Bowl_50"],
        "warsaw_crlf.txt": docs["Warsaw"].replace("\n", "\r\n"),
        "tesla.txt": docs["Nikola_Tesla"] + "\n\n" + docs["Nikola_Tesla"].split("\n\n")[0],
    }
    for name, text in texts.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return texts


def assert_spans_exact_on_disk(result) -> int:
    for s in result.spans:
        with open(s.source, encoding="utf-8", newline="") as f:
            on_disk = f.read()
        assert on_disk[s.doc_start : s.doc_end] == s.text, s
        assert result.text[s.response_start : s.response_end] == s.text
    return len(result.spans)


@pytest.fixture(scope="module")
def lc_store(default_lm, tmp_path_factory):
    from langchain_community.document_loaders import DirectoryLoader
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from nest_integrations.langchain import ExactTextLoader, chunks_from_langchain

    folder = tmp_path_factory.mktemp("lc-corpus")
    write_corpus(folder)
    docs = DirectoryLoader(str(folder), glob="*.txt", loader_cls=ExactTextLoader).load()
    splits = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50, add_start_index=True).split_documents(docs)
    documents, chunks, problems = chunks_from_langchain(docs, splits)
    assert problems == []
    return Datastore.build(default_lm, chunks, documents=documents, progress=False)


def test_langchain_pipeline_spans_exact_in_files(lc_store: Datastore) -> None:
    engine = lc_store.engine(NestConfig(max_new_tokens=48))
    n = sum(assert_spans_exact_on_disk(engine.generate(q)) for q in QUESTIONS)
    assert n > 0


def test_langchain_vector_store_as_passage_stage(lc_store: Datastore) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from nest_integrations.langchain import LangChainPassageRetriever, MiniLMEmbeddings, chunks_to_langchain

    vs = InMemoryVectorStore.from_documents(chunks_to_langchain(lc_store.chunks), MiniLMEmbeddings())
    engine = lc_store.engine(NestConfig(max_new_tokens=32, passages=3), retriever=LangChainPassageRetriever(vs, lc_store.chunks))
    result = engine.generate(QUESTIONS[0])
    expected = [d.id for d in vs.similarity_search(QUESTIONS[0], k=3)]
    assert [p.chunk_id for p in result.passages] == expected
    assert assert_spans_exact_on_disk(result) > 0
    assert all(s.chunk_id in expected for s in result.spans)


def test_keys_encoded_on_the_fly_for_retrieved_chunks(default_lm, tmp_path: Path) -> None:
    from langchain_community.document_loaders import DirectoryLoader

    from nest_integrations.langchain import ExactTextLoader, chunks_from_langchain

    write_corpus(tmp_path)
    docs = DirectoryLoader(str(tmp_path), glob="*.txt", loader_cls=ExactTextLoader).load()
    documents, chunks, _ = chunks_from_langchain(docs)
    store = Datastore.build(default_lm, chunks, documents=documents, compute_keys=False)
    assert store.n_tokens == 0
    result = store.engine(NestConfig(max_new_tokens=24, passages=2)).generate(QUESTIONS[0])
    assert 0 < store.n_tokens  # the two retrieved chunks got keys, kept for later requests
    assert sum(1 for i in range(len(store)) if store.token_store.__contains__(i)) == 2
    assert_spans_exact_on_disk(result)
