"""chunks_from_documents: the one splitter-to-chunks path (chunk texts and offsets pinned on the demo corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nest_integrations.chunks import Chunk, Document, chunks_from_documents
from nest_integrations.demo import load_demo_documents
from nest_integrations.errors import ConfigError, DuplicateIdError, EmptyCorpusError, OffsetError
from nest_integrations.langchain.text_splitter import default_splitter
from nest_integrations.loading import load_documents

BEFORE = json.loads((Path(__file__).parent / "data" / "demo_chunks_before.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("config", sorted(BEFORE["configs"]))
def test_default_path_gives_the_chunks_it_gave_before(config: str) -> None:
    """Existing datastores and results stay valid: same chunk ids, texts and offsets as before the refactor."""
    size, overlap = (int(x) for x in config.split("/"))
    docs = load_demo_documents()
    texts = {d.doc_id: d.text for d in docs}
    chunks = chunks_from_documents(docs, chunk_size=size, chunk_overlap=overlap)
    got: dict[str, list[list[int]]] = {}
    for c in chunks:
        assert c.chunk_id == f"{c.doc_id}#{len(got.get(c.doc_id, []))}"
        assert texts[c.doc_id][c.doc_offset : c.doc_offset + len(c.text)] == c.text
        assert dict(c.metadata) == dict(next(d for d in docs if d.doc_id == c.doc_id).metadata)
        got.setdefault(c.doc_id, []).append([c.doc_offset, len(c.text)])
    assert got == BEFORE["configs"][config]


# ---------------------------------------------------------------------------------------------
# the path with the default splitter and with any LangChain splitter: offsets exact in the file on disk
# ---------------------------------------------------------------------------------------------

REPEATED = "The Kvarnholmen Lighthouse was built in 1887 by Zoë Lindqvist — naïve café, 東京, 😀 and all."
TEXT = (
    "# Ünïcödé notes\r\n\r\n"
    + "\n\n".join([REPEATED] * 6)
    + "\n\nSmåland's coast: Ω ≈ ∑ — “quotes” and ‘single’ ones.\n\n"
    + "\n\n".join([REPEATED] * 3)
    + "\n   \n\tTrailing paragraph with   extra   spaces.\n"
)


def write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8"))
    return path


def read_back(path: str | Path) -> str:
    """The file's text as on disk: strict UTF-8, newlines untranslated."""
    return Path(path).read_bytes().decode("utf-8")


def assert_exact(chunks: list[Chunk]) -> None:
    """Every chunk's text is at its offset in its file re-read from disk."""
    cache: dict[str, str] = {}
    for ch in chunks:
        text = cache.setdefault(ch.doc_id, read_back(ch.doc_id))
        assert text[ch.doc_offset : ch.doc_offset + len(ch.text)] == ch.text, ch.chunk_id


def all_positions(text: str, needle: str) -> set[int]:
    out, i = set(), text.find(needle)
    while i >= 0:
        out.add(i)
        i = text.find(needle, i + 1)
    return out


def repeated_positions(chunks: list[Chunk]) -> set[int]:
    """Document offsets of the copies of REPEATED that the chunks hold (per their offsets)."""
    return {c.doc_offset + k for c in chunks for k in all_positions(c.text, REPEATED)}


@pytest.mark.parametrize(("chunk_size", "chunk_overlap"), [(800, 0), (120, 0), (60, 0), (60, 20), (25, 10)])
def test_offsets_exact_in_file_from_disk(tmp_path: Path, chunk_size: int, chunk_overlap: int) -> None:
    path = write(tmp_path / "notes.md", TEXT)
    documents, problems = load_documents([tmp_path])
    assert problems == []
    chunks = chunks_from_documents(documents, chunk_size=chunk_size, chunk_overlap=chunk_overlap)

    assert_exact(chunks)
    text = read_back(path)
    assert [c.chunk_id for c in chunks] == [f"{path}#{i}" for i in range(len(chunks))]
    assert all(c.doc_id == str(path) and c.metadata == documents[0].metadata for c in chunks)
    assert all(len(c.text) <= chunk_size and c.text == c.text.strip() for c in chunks)
    offsets = [c.doc_offset for c in chunks]
    assert offsets == sorted(set(offsets))
    ends = [c.doc_offset + len(c.text) for c in chunks]
    covered = [False] * len(text)
    for c in chunks:
        covered[c.doc_offset : c.doc_offset + len(c.text)] = [True] * len(c.text)
    assert all(covered[k] or text[k].isspace() for k in range(len(text)))  # every visible character is in a chunk
    if chunk_overlap == 0:
        assert all(e <= s for e, s in zip(ends[:-1], offsets[1:], strict=True))  # chunks tile the text
    else:
        assert any(e > s for e, s in zip(ends[:-1], offsets[1:], strict=True))  # they overlap
    # identical chunks (pieces of the repeated paragraph) sit at distinct offsets
    by_text: dict[str, list[int]] = {}
    for c in chunks:
        by_text.setdefault(c.text, []).append(c.doc_offset)
    assert all(len(set(v)) == len(v) for v in by_text.values())
    if chunk_size < len(REPEATED):
        assert any(len(v) > 1 for v in by_text.values())  # pieces of the repeated paragraph repeat
    else:  # every copy of the repeated paragraph is found, each at its own place
        assert repeated_positions(chunks) == all_positions(text, REPEATED)


@pytest.mark.parametrize("add_start_index", [True, False])
def test_any_langchain_splitter(tmp_path: Path, add_start_index: bool) -> None:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    path = write(tmp_path / "n.txt", TEXT)
    splitter = RecursiveCharacterTextSplitter(chunk_size=100, chunk_overlap=0, add_start_index=add_start_index)
    chunks = chunks_from_documents(load_documents([path]).documents, splitter=splitter)
    assert_exact(chunks)
    assert [c.text for c in chunks] == [p for p in splitter.split_text(TEXT) if p.strip()]
    assert repeated_positions(chunks) == all_positions(read_back(path), REPEATED)


def test_recovers_where_langchain_start_index_is_wrong(tmp_path: Path) -> None:
    # With a large overlap LangChain estimates the next search start as previous start + length -
    # overlap, which can fall before the previous chunk and find an earlier copy of a short chunk.
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    text = "ab \n \n\n ab é cd cd x ab x \n\n \n cd ab é \n\n \n\n x \n \n "
    path = write(tmp_path / "tricky.txt", text)
    splitter = RecursiveCharacterTextSplitter(chunk_size=22, chunk_overlap=20, add_start_index=True)
    assert [d.page_content for d in splitter.create_documents([text])] == ["ab", "ab é cd cd x ab x", "cd ab é", "x"]
    chunks = chunks_from_documents(load_documents([path]).documents, splitter=splitter)
    assert_exact(chunks)
    offsets = [c.doc_offset for c in chunks]
    assert offsets == sorted(offsets)
    assert offsets[-1] == text.rindex("x")  # the last chunk is the last "x", after "cd ab é"


def test_altered_chunk_raises_offset_error() -> None:
    from langchain_text_splitters import TextSplitter

    class UpperSplitter(TextSplitter):
        """A splitter that alters the text: its chunks cannot be located."""

        def split_text(self, text: str) -> list[str]:
            return [part.upper() for part in text.split("\n\n") if part.strip()]

    doc = Document("doc-1", "first paragraph\n\nsecond paragraph")
    with pytest.raises(OffsetError) as info:
        chunks_from_documents([doc], splitter=UpperSplitter(chunk_size=100, chunk_overlap=0))
    assert "doc-1" in str(info.value) and "doc-1#0" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"chunk_size": 0}, ConfigError, "chunk_size must be a positive integer"),
        ({"chunk_size": -5}, ConfigError, "chunk_size"),
        ({"chunk_size": 10, "chunk_overlap": 10}, ConfigError, "chunk_overlap must be"),
        ({"chunk_size": 10, "chunk_overlap": -1}, ConfigError, "chunk_overlap must be"),
    ],
)
def test_invalid_sizes(kwargs: dict[str, int], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        chunks_from_documents([Document("d", "text")], **kwargs)


def test_empty_input_and_duplicate_ids() -> None:
    with pytest.raises(EmptyCorpusError):
        chunks_from_documents([Document("blank", " \n\t ")])
    with pytest.raises(EmptyCorpusError):
        chunks_from_documents([])
    with pytest.raises(DuplicateIdError, match="'same'"):
        chunks_from_documents([Document("same", "alpha"), Document("same", "beta")])


def test_multiple_documents_ids_and_metadata(tmp_path: Path) -> None:
    a = write(tmp_path / "a.md", "Alpha paragraph.\n\n" * 3)
    b = write(tmp_path / "b.txt", "Beta — ß paragraph.\n\n" * 3)
    chunks = chunks_from_documents(load_documents([a, b]).documents, chunk_size=20)
    assert_exact(chunks)
    assert {c.doc_id for c in chunks} == {str(a), str(b)}
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert all(c.source == c.doc_id for c in chunks)


def test_the_default_splitter_is_a_langchain_text_splitter() -> None:
    from langchain_text_splitters import TextSplitter

    from nest_integrations.langchain.text_splitter import BoundaryTextSplitter

    splitter = default_splitter(300, 30)
    assert isinstance(splitter, BoundaryTextSplitter) and isinstance(splitter, TextSplitter)
    doc = load_demo_documents()[0]
    direct = chunks_from_documents([doc], chunk_size=300, chunk_overlap=30)
    assert [(c.doc_offset, c.text) for c in direct] == [(c.doc_offset, c.text) for c in chunks_from_documents([doc], splitter=splitter)]


def test_default_chunking_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nest_integrations.chunks as m; "
        "print('langchain_text_splitters' in sys.modules); "
        "m.chunks_from_documents([m.Document('d', 'some text')]); "
        "print('langchain_text_splitters' in sys.modules); "
        "print(sorted(x for x in sys.modules if x.split('.')[0] in ('langchain', 'langchain_community', 'llama_index')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    # the default chunking needs no framework package at all (boundary_spans)
    assert out[:3] == ["False", "False", "[]"]
