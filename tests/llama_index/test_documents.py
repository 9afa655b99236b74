"""LlamaIndex documents and nodes → chunks with exact offsets, and LlamaIndex retrievers as passage retrievers.

Real files (SQuAD paragraphs, WikiText articles) are written to disk, read with ``SimpleDirectoryReader``,
parsed into nodes, converted, and every chunk is checked against the file re-read from disk. No LLM;
embeddings are a tiny bag-of-words model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex  # noqa: E402
from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter, TokenTextSplitter  # noqa: E402
from llama_index.core.schema import Document as LIDocument  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from nest_integrations.chunks import Chunk  # noqa: E402
from nest_integrations.errors import ConfigError, DuplicateIdError, EmptyQuestionError  # noqa: E402
from nest_integrations.llama_index import (  # noqa: E402
    LlamaIndexPassageRetriever,
    chunks_from_llama_index,
    chunks_to_llama_index,
)
from nest_integrations.retrieval.base import PassageRetriever  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def data_dir() -> Path:
    data = shared_data_dir()
    if data is None:
        pytest.skip("dev data (../shared/data, or $NEST_SHARED_DATA) not available")
    return data


def real_texts() -> dict[str, str]:
    """A few real documents: three SQuAD paragraphs (one file) and two WikiText articles."""
    data = data_dir()
    squad = load_jsonl(data / "squad-dev200" / "corpus.jsonl")
    wiki = load_jsonl(data / "wikitext2-test" / "articles.jsonl")
    out = {"squad.txt": "\n\n".join(f"{r['title']}\n\n{r['text']}" for r in squad[:3]) + "\n"}
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


def assert_exact(chunks: Sequence[Chunk]) -> None:
    """Every chunk's text is at its offset in its file re-read from disk (doc id = file path)."""
    cache: dict[str, str] = {}
    for c in chunks:
        text = cache.setdefault(c.doc_id, read_raw(c.doc_id))
        assert text[c.doc_offset : c.doc_offset + len(c.text)] == c.text, c.chunk_id


def uncovered(text: str, spans: Sequence[tuple[int, int]]) -> int:
    """Non-whitespace characters of ``text`` outside every ``(start, end)`` span."""
    covered = [False] * len(text)
    for s, e in spans:
        covered[s:e] = [True] * (e - s)
    return sum(1 for ch, cov in zip(text, covered, strict=True) if not cov and not ch.isspace())


def spans(chunks: Sequence[Chunk]) -> list[tuple[int, int]]:
    return [(c.doc_offset, c.doc_offset + len(c.text)) for c in chunks]


def by_doc(chunks: Sequence[Chunk]) -> dict[str, list[Chunk]]:
    out: dict[str, list[Chunk]] = {}
    for c in chunks:
        out.setdefault(c.doc_id, []).append(c)
    return out


def occurrences(text: str, needle: str) -> list[int]:
    out, i = [], text.find(needle)
    while i >= 0:
        out.append(i)
        i = text.find(needle, i + 1)
    return out


class BagOfWords(BaseEmbedding):
    """A tiny deterministic embedding: hashed word counts, L2-normalised (no network, no model)."""

    dim: int = 512

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


PARSERS = {
    "default": None,
    "sentence-128/20": SentenceSplitter(chunk_size=128, chunk_overlap=20),
    "sentence-64/0": SentenceSplitter(chunk_size=64, chunk_overlap=0),
    "token-100/10": TokenTextSplitter(chunk_size=100, chunk_overlap=10),
}

# ---------------------------------------------------------------------------------------------
# chunks_from_llama_index over real files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("name", list(PARSERS))
def test_simple_directory_reader_offsets_exact(tmp_path: Path, name: str, newline: str) -> None:
    paths = write_corpus(tmp_path, real_texts(), newline)
    docs = SimpleDirectoryReader(str(tmp_path), filename_as_id=True).load_data()
    # SimpleDirectoryReader decodes the bytes: \r\n is kept, the text is the file's characters
    assert all(d.text == read_raw(d.doc_id) for d in docs)
    documents, chunks, problems = chunks_from_llama_index(docs, node_parser=PARSERS[name])

    assert problems == []
    assert sorted(d.doc_id for d in documents) == sorted(str(p) for p in paths.values())
    assert all(d.source == d.doc_id for d in documents)  # source = file_path
    assert_exact(chunks)
    if newline == "\r\n":
        assert any("\r\n" in c.text for c in chunks)
    for doc_id, cs in by_doc(chunks).items():
        offsets = [c.doc_offset for c in cs]
        assert offsets == sorted(set(offsets))
        assert uncovered(read_raw(doc_id), spans(cs)) == 0
        assert all(c.metadata["file_path"] == doc_id and c.source == doc_id for c in cs)
    # the nodes made beforehand and passed in give the same chunks; chunk ids are node ids
    parser = PARSERS[name] or SentenceSplitter(chunk_size=256, chunk_overlap=32)
    nodes = parser.get_nodes_from_documents(docs)
    _, again, problems = chunks_from_llama_index(docs, nodes)
    assert problems == []
    assert [c.chunk_id for c in again] == [n.node_id for n in nodes]
    assert [(c.doc_id, c.doc_offset, c.text) for c in again] == [(c.doc_id, c.doc_offset, c.text) for c in chunks]


def test_random_document_ids(tmp_path: Path) -> None:
    write_corpus(tmp_path, real_texts())
    docs = SimpleDirectoryReader(str(tmp_path)).load_data()  # uuid doc ids
    documents, chunks, problems = chunks_from_llama_index(docs)
    assert problems == [] and [d.doc_id for d in documents] == [d.doc_id for d in docs]
    files = {d.doc_id: read_raw(d.metadata["file_path"]) for d in docs}
    for c in chunks:
        assert files[c.doc_id][c.doc_offset : c.doc_offset + len(c.text)] == c.text


def repeated_document(tmp_path: Path) -> tuple[LIDocument, str, str]:
    """A file with a real SQuAD paragraph repeated (4 copies in a row, one more later)."""
    squad = [r["text"] for r in load_jsonl(data_dir() / "squad-dev200" / "corpus.jsonl")]
    rep = next(t for t in squad if 150 < len(t) < 260)
    text = squad[1] + "\n\n" + "\n\n".join([rep] * 4) + "\n\n" + squad[2] + "\n\n" + rep + "\n"
    write_corpus(tmp_path, {"repeated.txt": text})
    (doc,) = SimpleDirectoryReader(str(tmp_path), filename_as_id=True).load_data()
    assert doc.text == text
    return doc, text, rep


@pytest.mark.parametrize(("size", "overlap"), [(87, 0), (87, 32)])
def test_repeated_paragraphs_where_start_char_idx_is_wrong(tmp_path: Path, size: int, overlap: int) -> None:
    doc, text, rep = repeated_document(tmp_path)
    parser = SentenceSplitter(chunk_size=size, chunk_overlap=overlap)
    nodes = parser.get_nodes_from_documents([doc])  # sizes: ~23 of the 87 tokens go to the file metadata
    li_spans = [(n.start_char_idx, n.end_char_idx) for n in nodes]
    # LlamaIndex searches each node's text from just after the previous node's start and lands on an
    # earlier copy of the paragraph: a later copy is then covered by no node
    assert uncovered(text, li_spans) > 0, "precondition: LlamaIndex is right here"

    for given, given_parser in [(None, parser), (nodes, None)]:
        _, chunks, problems = chunks_from_llama_index([doc], given, node_parser=given_parser)
        assert problems == []
        assert_exact(chunks)
        offsets = [c.doc_offset for c in chunks]
        assert offsets == sorted(set(offsets))
        assert uncovered(text, spans(chunks)) == 0
        assert set(occurrences(text, rep)) <= {c.doc_offset + k for c in chunks for k in occurrences(c.text, rep)}


def test_missing_or_wrong_offsets_are_recovered(tmp_path: Path) -> None:
    write_corpus(tmp_path, real_texts())
    repeated_document(tmp_path / "more")
    docs = SimpleDirectoryReader(str(tmp_path), filename_as_id=True, recursive=True).load_data()
    parser = SentenceSplitter(chunk_size=96, chunk_overlap=16)
    nodes = parser.get_nodes_from_documents(docs)
    _, expected, _ = chunks_from_llama_index(docs, nodes)
    for i, node in enumerate(nodes):
        node.start_char_idx = [None, 0, 10**9, -5][i % 4]
        node.end_char_idx = None
    _, chunks, problems = chunks_from_llama_index(docs, nodes)
    assert problems == []
    assert_exact(chunks)
    assert [(c.chunk_id, c.doc_offset) for c in chunks] == [(c.chunk_id, c.doc_offset) for c in expected]


def test_node_not_in_document_is_reported_not_cited(tmp_path: Path) -> None:
    write_corpus(tmp_path, real_texts())
    docs = SimpleDirectoryReader(str(tmp_path), filename_as_id=True).load_data()
    nodes = SentenceSplitter(chunk_size=128, chunk_overlap=0).get_nodes_from_documents(docs)
    altered = nodes[2]
    altered.set_content(altered.get_content(metadata_mode=MetadataMode.NONE).upper())
    orphan = TextNode(text="This sentence is in no document.", id_="orphan")
    blank = TextNode(text=" \n ", id_="blank")
    # a node whose SOURCE relationship is lost is still mapped, by its text
    lost = nodes[5]
    lost.relationships.clear()

    _, chunks, problems = chunks_from_llama_index(docs, [*nodes, orphan, blank])
    assert_exact(chunks)
    assert altered.node_id not in {c.chunk_id for c in chunks}
    assert len(chunks) == len(nodes) - 1
    assert next(c for c in chunks if c.chunk_id == lost.node_id).doc_id == lost.metadata["file_path"]
    assert len(problems) == 3, problems
    assert any(p.startswith(f"{altered.node_id}: ") and "does not occur" in p for p in problems)
    assert any(p.startswith("orphan ") and "belongs to no document" in p for p in problems)
    assert "blank: whitespace-only node, dropped" in problems


def test_duplicate_ids_and_empty_documents() -> None:
    a = LIDocument(text="alpha text", id_="same")
    b = LIDocument(text="beta text", id_="same")
    with pytest.raises(DuplicateIdError, match="same") as info:
        chunks_from_llama_index([a, b])
    assert isinstance(info.value, ValueError)
    node = TextNode(text="alpha text", id_="n")
    with pytest.raises(DuplicateIdError, match="'n'"):
        chunks_from_llama_index([a], [node, node])

    empty = LIDocument(text="", id_="empty")
    blank = LIDocument(text=" \n\t", id_="blank")
    documents, chunks, problems = chunks_from_llama_index([empty, a, blank])
    assert [d.doc_id for d in documents] == ["same"]
    assert [(c.doc_id, c.doc_offset, c.text) for c in chunks] == [("same", 0, "alpha text")]
    assert problems == ["empty: empty document (no text), skipped", "blank: empty document (no text), skipped"]


# ---------------------------------------------------------------------------------------------
# LlamaIndexPassageRetriever
# ---------------------------------------------------------------------------------------------


def corpus(tmp_path: Path) -> tuple[list[TextNode], list[Chunk]]:
    write_corpus(tmp_path, real_texts())
    docs = SimpleDirectoryReader(str(tmp_path), filename_as_id=True).load_data()
    nodes = SentenceSplitter(chunk_size=96, chunk_overlap=16).get_nodes_from_documents(docs)
    _, chunks, problems = chunks_from_llama_index(docs, nodes)
    assert problems == []
    return nodes, chunks


def probe_indices(chunks: Sequence[Chunk]) -> list[int]:
    """A few chunks whose text is unique in the corpus."""
    texts = [c.text for c in chunks]
    unique = [i for i, t in enumerate(texts) if texts.count(t) == 1 and len(t) > 150]
    probes = unique[:: max(1, len(unique) // 6)]
    assert len(probes) >= 3, "the corpus should give a few unique chunks to probe with"
    return probes


def test_vector_store_index_hits_map_to_chunks(tmp_path: Path) -> None:
    nodes, chunks = corpus(tmp_path)
    embed = BagOfWords()
    index = VectorStoreIndex(nodes, embed_model=embed)
    from_chunks = VectorStoreIndex(chunks_to_llama_index(chunks), embed_model=embed)
    for source in (index, index.as_retriever(similarity_top_k=3), from_chunks):
        retriever = LlamaIndexPassageRetriever(source, chunks)
        assert isinstance(retriever, PassageRetriever) and len(retriever) == len(chunks)
        for i in probe_indices(chunks):
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                hits = retriever.retrieve(chunks[i].text, k=3)
            assert [h.index for h in hits][:1] == [i] and len(hits) == 3
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True) and 0.5 < scores[0] <= 1.0 + 1e-6


def test_chunks_to_llama_index_nodes() -> None:
    chunk = Chunk(text="beta", chunk_id="d:1", doc_id="d", doc_offset=6, metadata={"source": "d.txt"})
    (node,) = chunks_to_llama_index([chunk])
    assert node.node_id == "d:1" and node.ref_doc_id == "d"
    assert (node.start_char_idx, node.end_char_idx) == (6, 10)
    assert node.get_content(metadata_mode=MetadataMode.EMBED) == "source: d.txt\n\nbeta"


class _FixedRetriever(BaseRetriever):
    """Returns the same nodes whatever the query."""

    def __init__(self, hits: list[NodeWithScore]) -> None:
        super().__init__()
        self._hits = hits

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return list(self._hits)


def test_matching_rules_and_unmatched(tmp_path: Path) -> None:
    nodes, chunks = corpus(tmp_path)
    texts = [c.text for c in chunks]
    t = next(i for i in range(9, len(chunks)) if texts.count(texts[i]) == 1)
    live = list(chunks)
    by_meta = TextNode(text="whatever", metadata={"nest_chunk_id": chunks[5].chunk_id})
    by_pos = TextNode(text=chunks[7].text, start_char_idx=chunks[7].doc_offset)
    by_pos.relationships = dict(nodes[7].relationships)
    by_text = TextNode(text=chunks[t].text)
    stranger = TextNode(text="A passage from some other corpus.", metadata={"source": "other.txt"})
    fixed = _FixedRetriever(
        [NodeWithScore(node=n, score=s) for n, s in [(by_meta, 0.9), (stranger, 0.8), (nodes[3], 0.7), (by_pos, 0.6), (by_text, None)]]
    )

    retriever = LlamaIndexPassageRetriever(fixed, live)
    with pytest.warns(UserWarning, match=r"^1 document\(s\) returned by the LlamaIndex retriever match no chunk"):
        hits = retriever.retrieve("anything", k=10)
    assert [h.index for h in hits] == [5, 3, 7, t]
    assert [h.score for h in hits] == [1.0, 1 / 3, 1 / 4, 1 / 5]  # one node has no score: ranks for all
    fixed._hits[-1].score = 0.5
    with pytest.warns(UserWarning, match=r"^1 document\(s\) returned by the LlamaIndex retriever match no chunk"):
        assert [h.score for h in retriever.retrieve("anything", k=10)] == [0.9, 0.7, 0.6, 0.5]

    calls: list[tuple[str, dict[str, Any]]] = []

    def on_unmatched(text: str, metadata: dict[str, Any]) -> int | None:
        calls.append((text, metadata))
        live.append(Chunk(text=text, chunk_id=f"new:{len(live)}", doc_id="other.txt", metadata=metadata))
        return len(live) - 1

    retriever = LlamaIndexPassageRetriever(fixed, live, on_unmatched=on_unmatched)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert [h.index for h in retriever.retrieve("anything", k=10)] == [5, len(chunks), 3, 7, t]
        assert calls == [(stranger.text, {"source": "other.txt"})]
        assert [h.index for h in retriever.retrieve("anything", k=10)] == [5, len(chunks), 3, 7, t]
        assert len(calls) == 1 and len(retriever) == len(chunks) + 1


def test_retriever_arguments(tmp_path: Path) -> None:
    _, chunks = corpus(tmp_path)
    index = VectorStoreIndex(chunks_to_llama_index(chunks[:3]), embed_model=BagOfWords())
    retriever = LlamaIndexPassageRetriever(index, chunks)
    assert retriever.retrieve("query", 0) == []
    assert len(retriever.retrieve("query", 10**6)) == 3  # k clamped; the index holds 3
    with pytest.raises(EmptyQuestionError):
        retriever.retrieve("", 3)
    with pytest.raises(ConfigError):
        retriever.retrieve("query", -2)
    with pytest.raises(TypeError, match="BaseRetriever or index"):
        LlamaIndexPassageRetriever(chunks, chunks)  # type: ignore[arg-type]


def test_package_import_is_light() -> None:
    code = (
        "import sys, nest_integrations.llama_index as m; "
        "print('llama_index.core' in sys.modules); "
        "m.chunks_from_llama_index; print('llama_index.core' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
