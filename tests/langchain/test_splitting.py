"""Reading files and splitting them with LangChain: every chunk offset is exact in the file on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain_text_splitters")

from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter  # noqa: E402

from nest_integrations.chunks import Chunk, Document  # noqa: E402
from nest_integrations.errors import EmptyCorpusError, OffsetError  # noqa: E402
from nest_integrations.langchain import load_text_files, split_documents  # noqa: E402
from nest_integrations.langchain.splitting import locate_chunks  # noqa: E402

REPEATED = "The Kvarnholmen Lighthouse was built in 1887 by Zoë Lindqvist — naïve café, 東京, 😀 and all."
TEXT = (
    "# Ünïcödé notes\r\n\r\n"
    + "\n\n".join([REPEATED] * 6)
    + "\n\nSmåland's coast: Ω ≈ ∑ — “quotes” and ‘single’ ones.\n\n"
    + "\n\n".join([REPEATED] * 3)
    + "\n   \n\tTrailing paragraph with   extra   spaces.\n"
)


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
    """Start offsets of every occurrence of ``needle`` in ``text``."""
    out, i = set(), text.find(needle)
    while i >= 0:
        out.add(i)
        i = text.find(needle, i + 1)
    return out


def repeated_positions(chunks: list[Chunk]) -> set[int]:
    """Document offsets of the copies of REPEATED that the chunks hold (per their offsets)."""
    return {c.doc_offset + k for c in chunks for k in all_positions(c.text, REPEATED)}


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------
# load_text_files
# ---------------------------------------------------------------------------------------------


def test_load_text_files_reads_good_files_and_reports_bad_ones(tmp_path: Path) -> None:
    docs_dir = tmp_path / "docs"
    good = write(docs_dir / "good.md", TEXT)
    crlf = write(docs_dir / "sub" / "notes.txt", "Line one.\r\nLine two — ü.\r\n")
    write(docs_dir / "empty.txt", "")
    write(docs_dir / "blank.md", "  \n\t\n")
    write(docs_dir / "latin1.txt", "café in Latin-1".encode("latin-1"))
    write(docs_dir / "blob.md", b"PK\x03\x04\x00\x00binary")
    write(docs_dir / "ignored.pdf", b"%PDF-1.4")
    write(docs_dir / ".hidden" / "secret.txt", "hidden folder text")
    write(docs_dir / ".dotfile.txt", "hidden file text")
    missing = tmp_path / "nope.txt"

    documents, problems = load_text_files([docs_dir, good, missing])

    assert [d.doc_id for d in documents] == [str(docs_dir / "good.md"), str(crlf)]  # sorted walk, no duplicate
    for d in documents:
        assert d.text == read_back(d.doc_id)
        assert d.metadata == {"source": d.doc_id, "title": Path(d.doc_id).name}
    assert "\r\n" in documents[1].text  # newlines are kept as on disk
    joined = "\n".join(problems)
    assert len(problems) == 5, problems
    for name, why in [
        ("empty.txt", "empty"),
        ("blank.md", "empty"),
        ("latin1.txt", "not UTF-8"),
        ("blob.md", "binary"),
        ("nope.txt", "no such file"),
    ]:
        assert any(name in p and why in p for p in problems), (name, joined)
    assert "ignored.pdf" not in joined and "secret" not in joined


def test_load_text_files_single_path_and_empty_folder(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "hello")
    documents, problems = load_text_files(f)
    assert [d.text for d in documents] == ["hello"] and problems == []

    (tmp_path / "empty").mkdir()
    documents, problems = load_text_files([tmp_path / "empty"])
    assert documents == []
    assert len(problems) == 1 and "empty" in problems[0] and "no .txt or .md" in problems[0]


def test_explicit_file_with_other_suffix_is_read(tmp_path: Path) -> None:
    f = write(tmp_path / "README.rst", "Explicit files are read whatever their suffix.")
    documents, problems = load_text_files([f])
    assert len(documents) == 1 and problems == []


# ---------------------------------------------------------------------------------------------
# split_documents
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("chunk_size", "chunk_overlap"), [(800, 0), (120, 0), (60, 0), (60, 20), (25, 10)])
def test_offsets_exact_in_file_from_disk(tmp_path: Path, chunk_size: int, chunk_overlap: int) -> None:
    path = write(tmp_path / "notes.md", TEXT)
    documents, problems = load_text_files([tmp_path])
    assert problems == []
    chunks = split_documents(documents, chunk_size=chunk_size, chunk_overlap=chunk_overlap)

    assert_exact(chunks)
    text = read_back(path)
    assert [c.chunk_id for c in chunks] == [f"{path}#{i}" for i in range(len(chunks))]
    assert all(c.doc_id == str(path) and c.metadata == documents[0].metadata for c in chunks)
    assert all(len(c.text) <= chunk_size for c in chunks)
    offsets = [c.doc_offset for c in chunks]
    assert offsets == sorted(offsets)
    if chunk_overlap == 0:
        # chunks tile the text: no overlap, and every non-blank character is covered exactly once
        ends = [c.doc_offset + len(c.text) for c in chunks]
        assert all(e <= s for e, s in zip(ends[:-1], offsets[1:], strict=True))
        covered = [False] * len(text)
        for c in chunks:
            for k in range(c.doc_offset, c.doc_offset + len(c.text)):
                covered[k] = True
        assert all(covered[k] or text[k].isspace() for k in range(len(text)))
        # identical chunks (pieces of the repeated paragraph) sit at distinct offsets: a plain
        # str.find would give them all the first copy's offset
        by_text: dict[str, list[int]] = {}
        for c in chunks:
            by_text.setdefault(c.text, []).append(c.doc_offset)
        if chunk_size <= 2 * len(REPEATED):
            assert any(len(v) > 1 for v in by_text.values())
        assert all(len(set(v)) == len(v) for v in by_text.values())
    if chunk_size >= len(REPEATED):
        # every copy of the repeated paragraph is found, each at its own place
        assert repeated_positions(chunks) == all_positions(text, REPEATED)


def test_recovers_where_langchain_start_index_is_wrong(tmp_path: Path) -> None:
    # With a large overlap LangChain estimates the next search start as previous start + length -
    # overlap, which can fall before the previous chunk and find an earlier copy of a short chunk.
    text = "ab \n \n\n ab é cd cd x ab x \n\n \n cd ab é \n\n \n\n x \n \n "
    path = write(tmp_path / "tricky.txt", text)
    splitter = RecursiveCharacterTextSplitter(chunk_size=22, chunk_overlap=20, add_start_index=True)
    lc = splitter.create_documents([text])
    pieces = [d.page_content for d in lc]
    assert pieces == ["ab", "ab é cd cd x ab x", "cd ab é", "x"]

    chunks = split_documents(load_text_files([path])[0], chunk_size=22, chunk_overlap=20)
    assert_exact(chunks)
    offsets = [c.doc_offset for c in chunks]
    assert offsets == sorted(offsets)
    assert offsets[-1] == text.rindex("x")  # the last chunk is the last "x", after "cd ab é"


def test_splitter_without_start_index(tmp_path: Path) -> None:
    path = write(tmp_path / "n.txt", TEXT)
    splitter = RecursiveCharacterTextSplitter(chunk_size=100, chunk_overlap=0)  # no add_start_index
    chunks = split_documents(load_text_files([path])[0], splitter=splitter)
    assert_exact(chunks)
    assert repeated_positions(chunks) == all_positions(read_back(path), REPEATED)


class _UpperSplitter(TextSplitter):
    """A splitter that alters the text: its chunks cannot be located."""

    def split_text(self, text: str) -> list[str]:
        return [part.upper() for part in text.split("\n\n") if part.strip()]


def test_altered_chunk_raises_offset_error() -> None:
    doc = Document("doc-1", "first paragraph\n\nsecond paragraph")
    with pytest.raises(OffsetError) as info:
        split_documents([doc], splitter=_UpperSplitter(chunk_size=100, chunk_overlap=0))
    assert "doc-1" in str(info.value) and "doc-1#0" in str(info.value)


def test_locate_chunks_repairs_bad_proposals() -> None:
    text = "abc abc abc"
    # proposals: right, wrong (points at an earlier copy), missing, out of range
    assert locate_chunks(text, ["abc", "abc", "abc"], [0, 0, None]) == [0, 4, 8]
    assert locate_chunks(text, ["abc", "abc"], [0, 999]) == [0, 4]
    with pytest.raises(OffsetError):
        locate_chunks(text, ["xyz"], [0], doc_id="d")


def test_empty_and_invalid_input() -> None:
    with pytest.raises(EmptyCorpusError):
        split_documents([Document("blank", " \n\t ")])
    with pytest.raises(ValueError):
        split_documents([Document("d", "text")], chunk_size=0)
    with pytest.raises(ValueError):
        split_documents([Document("d", "text")], chunk_size=10, chunk_overlap=10)


def test_multiple_documents_ids_and_metadata(tmp_path: Path) -> None:
    a = write(tmp_path / "a.md", "Alpha paragraph.\n\n" * 3)
    b = write(tmp_path / "b.txt", "Beta — ß paragraph.\n\n" * 3)
    chunks = split_documents(load_text_files([a, b])[0], chunk_size=20)
    assert_exact(chunks)
    assert {c.doc_id for c in chunks} == {str(a), str(b)}
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert all(c.source == c.doc_id for c in chunks)


def test_package_import_is_light() -> None:
    code = (
        "import sys, nest_integrations.langchain as m; "
        "print('langchain_text_splitters' in sys.modules); "
        "from nest_integrations import Document; m.split_documents([Document('d', 'some text')]); "
        "print('langchain_text_splitters' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
