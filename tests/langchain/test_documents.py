"""LangChain documents → chunks with exact offsets, and LangChain retrievers as passage retrievers.

Real files (SQuAD paragraphs, WikiText articles) are written to disk, loaded with LangChain loaders,
split, converted, and every chunk is checked against the file re-read from disk. No language model.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_community")

from langchain_community.document_loaders import DirectoryLoader, PyPDFLoader, TextLoader  # noqa: E402
from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document as LCDocument  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter  # noqa: E402

from nest_integrations.chunks import Chunk  # noqa: E402
from nest_integrations.errors import ConfigError, DuplicateIdError, EmptyQuestionError  # noqa: E402
from nest_integrations.langchain import (  # noqa: E402
    ExactTextLoader,
    LangChainPassageRetriever,
    chunks_from_langchain,
    chunks_to_langchain,
)
from nest_integrations.retrieval.base import PassageRetriever  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402
from tests.pdf import make_pdf  # noqa: E402

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def real_texts() -> dict[str, str]:
    """A few real documents: three SQuAD paragraphs (one file) and two WikiText articles."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("dev data (../shared/data, or $NEST_SHARED_DATA) not available")
    squad = [json.loads(line) for line in (data / "squad-dev200" / "corpus.jsonl").open(encoding="utf-8")]
    wiki = [json.loads(line) for line in (data / "wikitext2-test" / "articles.jsonl").open(encoding="utf-8")]
    para = "\n\n".join(f"{r['title']}\n\n{r['text']}" for r in squad[:3]) + "\n"
    out = {"squad.txt": para}
    for i in (0, 2):
        out[f"wiki_{i}.txt"] = f"= {wiki[i]['title']} =\n\n{wiki[i]['text_detok'].strip()}\n"
    return out


def write_corpus(folder: Path, texts: dict[str, str], newline: str = "\n") -> dict[str, Path]:
    """Write the texts as UTF-8 files with the given line ending; returns name → path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in texts.items():
        path = folder / name
        path.write_bytes(text.replace("\n", newline).encode("utf-8"))
        paths[name] = path
    return paths


def read_raw(path: str | Path) -> str:
    """The file's characters exactly as on disk (no newline translation)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def assert_exact(chunks: Sequence[Chunk], read: Callable[[str], str] = read_raw) -> None:
    """Every chunk's text is at its offset in its file re-read from disk."""
    cache: dict[str, str] = {}
    for c in chunks:
        text = cache.setdefault(c.doc_id, read(c.doc_id))
        assert text[c.doc_offset : c.doc_offset + len(c.text)] == c.text, c.chunk_id


def uncovered(text: str, chunks: Sequence[Chunk]) -> int:
    """Non-whitespace characters of ``text`` that no chunk covers."""
    covered = [False] * len(text)
    for c in chunks:
        covered[c.doc_offset : c.doc_offset + len(c.text)] = [True] * len(c.text)
    return sum(1 for ch, cov in zip(text, covered, strict=True) if not cov and not ch.isspace())


def occurrences(text: str, needle: str) -> list[int]:
    out, i = [], text.find(needle)
    while i >= 0:
        out.append(i)
        i = text.find(needle, i + 1)
    return out


def load_dir(folder: Path, loader_cls: Any = TextLoader) -> list[LCDocument]:
    docs = DirectoryLoader(
        str(folder), glob="**/*.txt", loader_cls=loader_cls, loader_kwargs={"encoding": "utf-8"}
    ).load()
    return sorted(docs, key=lambda d: d.metadata["source"])


def by_doc(chunks: Sequence[Chunk]) -> dict[str, list[Chunk]]:
    out: dict[str, list[Chunk]] = {}
    for c in chunks:
        out.setdefault(c.doc_id, []).append(c)
    return out


SPLITTERS = {
    "default": None,
    "300/60": RecursiveCharacterTextSplitter(chunk_size=300, chunk_overlap=60, add_start_index=True),
    "120/0": RecursiveCharacterTextSplitter(chunk_size=120, chunk_overlap=0, add_start_index=True),
}

# ---------------------------------------------------------------------------------------------
# chunks_from_langchain over real files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPLITTERS))
def test_text_loader_files_offsets_exact(tmp_path: Path, name: str) -> None:
    paths = write_corpus(tmp_path / "docs", real_texts())
    docs = load_dir(tmp_path / "docs")
    splitter = SPLITTERS[name]
    documents, chunks, problems = chunks_from_langchain(docs, text_splitter=splitter)

    assert problems == []
    assert sorted(d.doc_id for d in documents) == sorted(str(p) for p in paths.values())
    assert all(d.text == read_raw(d.doc_id) for d in documents)  # LF files: TextLoader keeps them as they are
    assert_exact(chunks)
    for doc_id, cs in by_doc(chunks).items():
        assert [c.chunk_id for c in cs] == [f"{doc_id}:{n}" for n in range(len(cs))]
        assert all(c.source == doc_id and c.metadata["start_index"] == c.doc_offset for c in cs)
        offsets = [c.doc_offset for c in cs]
        assert offsets == sorted(set(offsets))
        assert uncovered(read_raw(doc_id), cs) == 0
    if splitter is not None:
        # the same splits, made beforehand and passed in, give the same chunks
        _, again, problems = chunks_from_langchain(docs, splitter.split_documents(docs), text_splitter=splitter)
        assert problems == [] and again == chunks


def test_default_splitter_sizes(tmp_path: Path) -> None:
    write_corpus(tmp_path, real_texts())
    _, chunks, _ = chunks_from_langchain(load_dir(tmp_path))
    assert max(len(c.text) for c in chunks) <= 800
    assert len(chunks) > len(real_texts())


def test_crlf_text_loader_normalises_newlines(tmp_path: Path) -> None:
    """TextLoader reads in text mode: ``\\r\\n`` becomes ``\\n``, so offsets index the loaded text, not the file."""
    write_corpus(tmp_path, real_texts(), newline="\r\n")
    docs = load_dir(tmp_path, TextLoader)
    assert all("\r" not in d.page_content for d in docs)
    documents, chunks, problems = chunks_from_langchain(docs, text_splitter=SPLITTERS["300/60"])
    assert problems == []
    for d in documents:
        raw = read_raw(d.doc_id)
        assert "\r\n" in raw and d.text == raw.replace("\r\n", "\n")

    def read_universal(path: str) -> str:
        with open(path, encoding="utf-8") as f:  # what TextLoader reads
            return f.read()

    assert_exact(chunks, read_universal)
    with pytest.raises(AssertionError):  # … which is not the file's characters
        assert_exact(chunks, read_raw)


def test_crlf_exact_text_loader_keeps_file_characters(tmp_path: Path) -> None:
    write_corpus(tmp_path, real_texts(), newline="\r\n")
    docs = load_dir(tmp_path, ExactTextLoader)
    assert all("\r\n" in d.page_content for d in docs)
    for splitter in (SPLITTERS["300/60"], SPLITTERS["120/0"]):
        documents, chunks, problems = chunks_from_langchain(docs, text_splitter=splitter)
        assert problems == []
        assert all(d.text == read_raw(d.doc_id) for d in documents)
        assert_exact(chunks)
        assert any("\r\n" in c.text for c in chunks)
        for doc_id, cs in by_doc(chunks).items():
            assert uncovered(read_raw(doc_id), cs) == 0


def repeated_corpus(tmp_path: Path) -> tuple[Path, str, str]:
    """A file with a real SQuAD paragraph repeated (4 copies in a row, one more later)."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("dev data (../shared/data, or $NEST_SHARED_DATA) not available")
    squad = [json.loads(line)["text"] for line in (data / "squad-dev200" / "corpus.jsonl").open(encoding="utf-8")]
    rep = next(t for t in squad if 150 < len(t) < 260)
    text = squad[1] + "\n\n" + "\n\n".join([rep] * 4) + "\n\n" + squad[2] + "\n\n" + rep + "\n"
    path = tmp_path / "repeated.txt"
    path.write_bytes(text.encode("utf-8"))
    return path, text, rep


def test_repeated_paragraphs_where_start_index_is_wrong(tmp_path: Path) -> None:
    path, text, rep = repeated_corpus(tmp_path)
    docs = TextLoader(str(path), encoding="utf-8").load()
    splitter = RecursiveCharacterTextSplitter(chunk_size=220, chunk_overlap=190, add_start_index=True)
    splits = splitter.split_documents(docs)
    lc_starts = [s.metadata["start_index"] for s in splits]
    # LangChain's str.find from "previous start + length - overlap" lands on an earlier copy
    assert any(b <= a for a, b in zip(lc_starts, lc_starts[1:], strict=False)), "precondition: LangChain is right here"

    for given_splits, given_splitter in [(None, splitter), (splits, splitter), (splits, None)]:
        _, chunks, problems = chunks_from_langchain(docs, given_splits, text_splitter=given_splitter)
        assert problems == []
        assert_exact(chunks)
        offsets = [c.doc_offset for c in chunks]
        assert offsets == sorted(set(offsets))  # in order, no two chunks at one place
        assert uncovered(text, chunks) == 0
        # each copy of the repeated paragraph is a chunk of its own, at its own place
        assert sorted(c.doc_offset for c in chunks if c.text == rep) == occurrences(text, rep)
        assert all(c.metadata["start_index"] == c.doc_offset for c in chunks)


def test_missing_start_index_is_recovered(tmp_path: Path) -> None:
    write_corpus(tmp_path / "docs", real_texts())
    path, _, _ = repeated_corpus(tmp_path / "docs")
    docs = load_dir(tmp_path / "docs")
    with_index = RecursiveCharacterTextSplitter(chunk_size=200, chunk_overlap=40, add_start_index=True)
    without = RecursiveCharacterTextSplitter(chunk_size=200, chunk_overlap=40)
    _, expected, _ = chunks_from_langchain(docs, text_splitter=with_index)

    _, chunks, problems = chunks_from_langchain(docs, text_splitter=without)
    assert problems == []
    assert_exact(chunks)
    assert [(c.chunk_id, c.doc_offset, c.text) for c in chunks] == [
        (c.chunk_id, c.doc_offset, c.text) for c in expected
    ]
    assert all("start_index" not in c.metadata for c in chunks)

    # start_index stripped from (or garbled in) given splits, overlap unknown
    stripped = []
    for i, s in enumerate(with_index.split_documents(docs)):
        meta = {k: v for k, v in s.metadata.items() if k != "start_index"}
        if i % 3 == 1:
            meta["start_index"] = 10**9 if i % 2 else 0  # out of range / wrong
        stripped.append(LCDocument(page_content=s.page_content, metadata=meta))
    _, chunks, problems = chunks_from_langchain(docs, stripped)
    assert problems == []
    assert_exact(chunks)
    assert [(c.chunk_id, c.doc_offset) for c in chunks] == [(c.chunk_id, c.doc_offset) for c in expected]
    assert any(c.doc_id == str(path) for c in chunks)


def test_split_not_in_document_is_reported_not_cited(tmp_path: Path) -> None:
    write_corpus(tmp_path, real_texts())
    docs = load_dir(tmp_path)
    splits = RecursiveCharacterTextSplitter(chunk_size=300, chunk_overlap=0, add_start_index=True).split_documents(docs)
    victim = splits[2]
    altered = LCDocument(page_content=victim.page_content.upper(), metadata=dict(victim.metadata))
    orphan = LCDocument(page_content="This sentence is in no document.", metadata={"source": "elsewhere.txt"})
    given = [*splits[:2], altered, *splits[3:], orphan]

    _, chunks, problems = chunks_from_langchain(docs, given)
    assert_exact(chunks)
    bad_id = f"{victim.metadata['source']}:2"
    assert bad_id not in {c.chunk_id for c in chunks}
    assert len(chunks) == len(splits) - 1
    assert len(problems) == 2, problems
    assert any(p.startswith(f"{bad_id}: ") and "does not occur" in p for p in problems), problems
    assert any(p.startswith(f"split {len(given) - 1}: ") and "belongs to no document" in p for p in problems)


class _UpperSplitter(TextSplitter):
    """A splitter that alters the text."""

    def split_text(self, text: str) -> list[str]:
        return [p.upper() if i == 1 else p for i, p in enumerate(text.split("\n\n")) if p.strip()]


def test_altering_splitter_is_reported() -> None:
    doc = LCDocument(page_content="first paragraph\n\nsecond paragraph\n\nthird", metadata={"source": "s.txt"})
    documents, chunks, problems = chunks_from_langchain([doc], text_splitter=_UpperSplitter(chunk_size=50, chunk_overlap=0))
    assert [c.chunk_id for c in chunks] == ["s.txt:0", "s.txt:2"]
    assert [c.doc_offset for c in chunks] == [0, doc.page_content.index("third")]
    assert len(problems) == 1 and problems[0].startswith("s.txt:1:")


def test_duplicate_ids_error() -> None:
    a = LCDocument(page_content="alpha", metadata={"source": "same.txt"})
    b = LCDocument(page_content="beta", metadata={"source": "same.txt"})
    with pytest.raises(DuplicateIdError, match="same.txt") as info:
        chunks_from_langchain([a, b])
    assert isinstance(info.value, ValueError) and "id_key" in str(info.value)
    # an id field in the metadata resolves it …
    a.metadata["key"], b.metadata["key"] = "A", "B"
    documents, chunks, _ = chunks_from_langchain([a, b], id_key="key")
    assert [c.chunk_id for c in chunks] == ["A:0", "B:0"]
    # … but it must be on every document
    del b.metadata["key"]
    with pytest.raises(ConfigError, match="'key'"):
        chunks_from_langchain([a, b], id_key="key")
    # pages of one source are distinct documents
    p0 = LCDocument(page_content="page zero", metadata={"source": "f.pdf", "page": 0})
    p1 = LCDocument(page_content="page one", metadata={"source": "f.pdf", "page": 1})
    documents, _, _ = chunks_from_langchain([p0, p1])
    assert [d.doc_id for d in documents] == ["f.pdf#page=0", "f.pdf#page=1"]


def test_id_rule_and_splits_mapped_by_content() -> None:
    with_id = LCDocument(page_content="Has its own id. " * 3, id="my-id", metadata={"source": "x.txt"})
    bare = LCDocument(page_content="No id and no source here.")
    documents, chunks, problems = chunks_from_langchain([with_id, bare])
    assert [d.doc_id for d in documents] == ["my-id", "doc-1"]
    assert [c.chunk_id for c in chunks] == ["my-id:0", "doc-1:0"] and problems == []
    # given splits carry no id (LangChain splitters do not copy it): mapped by source, then by content
    splitter = RecursiveCharacterTextSplitter(chunk_size=20, chunk_overlap=0)
    splits = splitter.split_documents([with_id, bare])
    _, chunks, problems = chunks_from_langchain([with_id, bare], splits)
    assert problems == []
    assert {c.doc_id for c in chunks} == {"my-id", "doc-1"}
    for c in chunks:
        text = with_id.page_content if c.doc_id == "my-id" else bare.page_content
        assert text[c.doc_offset : c.doc_offset + len(c.text)] == c.text
    mine = [c for c in chunks if c.doc_id == "my-id"]
    assert len(mine) > 1 and uncovered(with_id.page_content, mine) == 0


def test_empty_documents_and_blank_splits_reported(tmp_path: Path) -> None:
    texts = real_texts()
    paths = write_corpus(tmp_path, {**texts, "empty.txt": "", "blank.txt": " \n\t\n"})
    docs = load_dir(tmp_path)
    documents, chunks, problems = chunks_from_langchain(docs)
    assert {d.doc_id for d in documents} == {str(paths[n]) for n in texts}
    assert len(problems) == 2
    assert all("empty document" in p for p in problems)
    assert {str(paths["empty.txt"]), str(paths["blank.txt"])} == {p.split(": ")[0] for p in problems}
    assert_exact(chunks)

    doc = next(d for d in docs if d.metadata["source"] == str(paths["squad.txt"]))
    blank = LCDocument(page_content="  \n ", metadata=dict(doc.metadata))
    splits = RecursiveCharacterTextSplitter(chunk_size=400, chunk_overlap=0).split_documents([doc])
    _, chunks, problems = chunks_from_langchain([doc], [splits[0], blank, *splits[1:]])
    assert len(chunks) == len(splits)
    assert problems == [f"{paths['squad.txt']}:1: whitespace-only split, dropped"]
    assert_exact(chunks)
    assert chunks_from_langchain([blank]) == ([], [], [f"{paths['squad.txt']}: empty document (no text), skipped"])


def test_pdf_pages_are_documents(tmp_path: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    squad = real_texts()["squad.txt"]
    words = [w for w in (w.encode("ascii", "ignore").decode() for w in squad.split()) if w]
    lines = [" ".join(words[i : i + 12]) for i in range(0, min(len(words), 12 * 40), 12)]
    path = tmp_path / "squad.pdf"
    make_pdf(path, [lines[:20], lines[20:]])

    docs = PyPDFLoader(str(path)).load()
    assert [d.metadata["page"] for d in docs] == [0, 1]
    splitter = RecursiveCharacterTextSplitter(chunk_size=150, chunk_overlap=30, add_start_index=True)
    documents, chunks, problems = chunks_from_langchain(docs, text_splitter=splitter)
    assert problems == []
    assert [d.doc_id for d in documents] == [f"{path}#page=0", f"{path}#page=1"]
    pages = [page.extract_text() for page in pypdf.PdfReader(path).pages]  # re-read from disk
    for c in chunks:
        page = int(c.doc_id.rsplit("#page=", 1)[1])
        assert c.metadata["page"] == page and c.source == str(path)
        assert pages[page][c.doc_offset : c.doc_offset + len(c.text)] == c.text
    assert "Super Bowl" in " ".join(c.text for c in chunks)


# ---------------------------------------------------------------------------------------------
# LangChainPassageRetriever
# ---------------------------------------------------------------------------------------------


class _RelevanceStore(InMemoryVectorStore):
    """InMemoryVectorStore with a relevance score (it defines none)."""

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda s: (s + 1.0) / 2.0


def corpus_chunks(tmp_path: Path) -> tuple[list[LCDocument], list[LCDocument], list[Chunk]]:
    write_corpus(tmp_path, real_texts())
    docs = load_dir(tmp_path)
    splits = RecursiveCharacterTextSplitter(chunk_size=300, chunk_overlap=50, add_start_index=True).split_documents(docs)
    _, chunks, problems = chunks_from_langchain(docs, splits)
    assert problems == []
    return docs, splits, chunks


def probe_indices(chunks: Sequence[Chunk]) -> list[int]:
    """A few chunks whose text is unique in the corpus."""
    texts = [c.text for c in chunks]
    unique = [i for i, t in enumerate(texts) if texts.count(t) == 1 and len(t) > 100]
    probes = unique[:: max(1, len(unique) // 6)]
    assert len(probes) >= 3, "the corpus should give a few unique chunks to probe with"
    return probes


@pytest.mark.parametrize("store_cls", [InMemoryVectorStore, _RelevanceStore])
def test_vector_store_hits_map_to_chunks(tmp_path: Path, store_cls: type[InMemoryVectorStore]) -> None:
    _, splits, chunks = corpus_chunks(tmp_path)
    store = store_cls(DeterministicFakeEmbedding(size=64))
    store.add_documents(splits)  # the splits themselves: no chunk ids, matched by (source, start_index)
    retriever = LangChainPassageRetriever(store, chunks)
    assert isinstance(retriever, PassageRetriever) and len(retriever) == len(chunks)
    for i in probe_indices(chunks):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            hits = retriever.retrieve(chunks[i].text, k=4)
        assert len(hits) == 4 and hits[0].index == i
        assert len({h.index for h in hits}) == 4
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        if store_cls is _RelevanceStore:
            assert scores[0] == pytest.approx(1.0)
        else:
            assert scores == [1.0, 1 / 2, 1 / 3, 1 / 4]


def test_retriever_and_chunk_ids(tmp_path: Path) -> None:
    _, _, chunks = corpus_chunks(tmp_path)
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    lc_docs = chunks_to_langchain(chunks)
    assert [d.id for d in lc_docs] == [c.chunk_id for c in chunks]
    store.add_documents(lc_docs)
    for source in (store, store.as_retriever(search_kwargs={"k": 2})):
        retriever = LangChainPassageRetriever(source, chunks)
        for i in probe_indices(chunks):
            hits = retriever.retrieve(chunks[i].text, k=3)
            assert [h.index for h in hits][:1] == [i] and len(hits) == 3


class _FixedRetriever(BaseRetriever):
    """Returns the same documents whatever the query."""

    docs: list[LCDocument]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        return list(self.docs)


def test_matching_rules_and_unmatched(tmp_path: Path) -> None:
    _, splits, chunks = corpus_chunks(tmp_path)
    live = list(chunks)
    by_meta = LCDocument(page_content="whatever", metadata={"nest_chunk_id": chunks[5].chunk_id})
    by_id = LCDocument(page_content="whatever", id=chunks[3].chunk_id)
    by_pos = splits[7]
    texts = [c.text for c in chunks]
    t = next(i for i in range(9, len(chunks)) if texts.count(texts[i]) == 1)
    by_text = LCDocument(page_content=chunks[t].text)
    stranger = LCDocument(page_content="A passage from some other corpus.", metadata={"source": "other.txt"})
    fixed = _FixedRetriever(docs=[by_meta, stranger, by_id, by_pos, by_text, by_id])

    retriever = LangChainPassageRetriever(fixed, live)
    with pytest.warns(UserWarning, match=r"^1 document\(s\) returned by the LangChain retriever match no chunk"):
        hits = retriever.retrieve("anything", k=10)
    assert [h.index for h in hits] == [5, 3, 7, t]  # duplicate of chunk 3 dropped
    assert [h.score for h in hits] == [1.0, 1 / 3, 1 / 4, 1 / 5]
    with pytest.warns(UserWarning, match="^1 document"):
        assert [h.index for h in retriever.retrieve("anything", k=2)] == [5]  # k cuts the retriever's results

    calls: list[tuple[str, dict[str, Any]]] = []

    def on_unmatched(text: str, metadata: dict[str, Any]) -> int | None:
        calls.append((text, metadata))
        live.append(Chunk(text=text, chunk_id=f"new:{len(live)}", doc_id="other.txt", metadata=metadata))
        return len(live) - 1

    retriever = LangChainPassageRetriever(fixed, live, on_unmatched=on_unmatched)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        hits = retriever.retrieve("anything", k=10)
        assert [h.index for h in hits] == [5, len(chunks), 3, 7, t]
        assert calls == [(stranger.page_content, {"source": "other.txt"})]
        assert len(retriever) == len(chunks) + 1
        # the new chunk is in the (live) list now: matched by its text, no second call
        assert [h.index for h in retriever.retrieve("anything", k=10)] == [5, len(chunks), 3, 7, t]
        assert len(calls) == 1

    skip = LangChainPassageRetriever(fixed, chunks, on_unmatched=lambda text, meta: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert [h.index for h in skip.retrieve("anything", k=10)] == [5, 3, 7, t]
    broken = LangChainPassageRetriever(fixed, chunks, on_unmatched=lambda text, meta: 10**6)
    with pytest.raises(ValueError, match="on_unmatched"):
        broken.retrieve("anything", k=10)


def test_retriever_arguments(tmp_path: Path) -> None:
    _, _, chunks = corpus_chunks(tmp_path)
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(chunks_to_langchain(chunks[:3]))
    retriever = LangChainPassageRetriever(store, chunks)
    assert retriever.retrieve("query", 0) == []
    assert len(retriever.retrieve("query", 10**6)) == 3  # k clamped; the store holds 3
    with pytest.raises(EmptyQuestionError):
        retriever.retrieve("  ", 3)
    with pytest.raises(ConfigError):
        retriever.retrieve("query", -1)
    with pytest.raises(TypeError, match="BaseRetriever or VectorStore"):
        LangChainPassageRetriever(object(), chunks)  # type: ignore[arg-type]
