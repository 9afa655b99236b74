"""The package's loader and splitter path seen from LangChain: NestFileLoader, ExactTextLoader, the old names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

from nest_integrations.errors import DocumentLoadError, EmptyCorpusError  # noqa: E402
from nest_integrations.loading import load_documents  # noqa: E402
from tests.pdf import make_pdf  # noqa: E402


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_nest_file_loader_gives_the_documents_nest_index_reads(tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    from nest_integrations.langchain import NestFileLoader, chunks_from_langchain

    write(tmp_path / "a.md", "Alpha.\r\n\r\nBeta paragraph.\n")
    make_pdf(tmp_path / "m.pdf", [["Page one text."], ["Page two text."]])
    write(tmp_path / "bad.txt", b"\x00binary")
    loader = NestFileLoader(tmp_path, errors="skip")
    lc_docs = loader.load()
    core = load_documents([tmp_path]).documents
    assert [(d.id, d.page_content, d.metadata) for d in lc_docs] == [(d.doc_id, d.text, dict(d.metadata)) for d in core]
    assert [str(p) for p in loader.problems] == [f"{tmp_path / 'bad.txt'}: binary file (contains NUL bytes), not text"]
    documents, chunks, problems = chunks_from_langchain(lc_docs)
    assert problems == [] and [d.doc_id for d in documents] == [d.doc_id for d in core]
    texts = {d.doc_id: d.text for d in core}
    assert all(texts[c.doc_id][c.doc_offset : c.doc_offset + len(c.text)] == c.text for c in chunks)
    with pytest.raises(DocumentLoadError, match=r"bad\.txt: binary file"):
        NestFileLoader([tmp_path]).load()  # errors="raise" by default
    with pytest.raises(EmptyCorpusError):
        NestFileLoader(tmp_path / "bad.txt", errors="skip").load()


def test_exact_text_loader_errors_are_the_loaders(tmp_path: Path) -> None:
    from nest_integrations.langchain import ExactTextLoader

    bad = write(tmp_path / "latin1.txt", "café".encode("latin-1"))
    with pytest.raises(DocumentLoadError, match=r"latin1\.txt: not UTF-8 text"):
        ExactTextLoader(bad).load()
    assert ExactTextLoader(bad, encoding="latin-1").load()[0].page_content == "café"
    with pytest.raises(DocumentLoadError, match="binary file"):
        ExactTextLoader(write(tmp_path / "b.txt", b"a\x00b")).load()
    with pytest.raises(DocumentLoadError, match="no such file"):
        ExactTextLoader(tmp_path / "missing.txt").load()
    # an empty file is an empty document (chunks_from_langchain reports and skips it), as with TextLoader
    assert ExactTextLoader(write(tmp_path / "e.txt", "")).load()[0].page_content == ""


def test_old_names_are_the_package_loader_and_splitter_path() -> None:
    import nest_integrations.langchain as lc
    from nest_integrations.chunks import chunks_from_documents

    assert lc.load_text_files is load_documents
    assert lc.split_documents is chunks_from_documents


def test_package_import_is_light() -> None:
    """Importing the adapter loads no LangChain package; the first LangChain-backed name does."""
    code = (
        "import sys, nest_integrations.langchain as m; "
        "print('langchain_core' in sys.modules); "
        "m.NestFileLoader; "
        "print('langchain_core' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
