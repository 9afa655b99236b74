"""The one file loader: text exactly as on disk, PDFs page by page, folders recursively, typed problems."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from nest_integrations.errors import ConfigError, DocumentLoadError, EmptyCorpusError, NestError
from nest_integrations.loading import files_under, load_documents, read_file, read_pdf_file, read_text_file
from tests.pdf import make_pdf

TEXT = "# Ünïcödé notes\r\n\r\nFirst paragraph — café, 東京, 😀.\n\nSecond paragraph.\n"


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def read_back(path: str | Path) -> str:
    """The file's text as on disk: strict UTF-8, newlines untranslated."""
    return Path(path).read_bytes().decode("utf-8")


def test_reads_good_files_and_reports_bad_ones(tmp_path: Path) -> None:
    docs_dir = tmp_path / "docs"
    good = write(docs_dir / "good.md", TEXT)
    crlf = write(docs_dir / "sub" / "notes.txt", "Line one.\r\nLine two — ü.\r\n")
    write(docs_dir / "empty.txt", "")
    write(docs_dir / "blank.md", "  \n\t\n")
    write(docs_dir / "latin1.txt", "café in Latin-1".encode("latin-1"))
    write(docs_dir / "blob.md", b"PK\x03\x04\x00\x00binary")
    write(docs_dir / "broken.pdf", b"%PDF-1.4 not really")
    write(docs_dir / "image.png", b"\x89PNG\x00\x00")  # not an indexable suffix: not read from a folder
    write(docs_dir / ".hidden" / "secret.txt", "hidden folder text")
    write(docs_dir / ".dotfile.txt", "hidden file text")
    missing = tmp_path / "nope.txt"

    documents, problems = load_documents([docs_dir, good, missing])

    assert [d.doc_id for d in documents] == [str(docs_dir / "good.md"), str(crlf)]  # sorted walk, no duplicate
    for d in documents:
        assert d.text == read_back(d.doc_id)
        assert d.metadata == {"source": d.doc_id, "title": Path(d.doc_id).name}
    assert "\r\n" in documents[0].text and "\r\n" in documents[1].text  # newlines are kept as on disk
    assert all(isinstance(p, DocumentLoadError) for p in problems)
    reasons = {Path(p.path).name: p.reason for p in problems}
    assert set(reasons) == {"empty.txt", "blank.md", "latin1.txt", "blob.md", "broken.pdf", "nope.txt"}, reasons
    assert reasons["empty.txt"] == reasons["blank.md"] == "empty file"
    assert reasons["latin1.txt"].startswith("not UTF-8 text (invalid continuation byte at byte 3)")
    assert reasons["blob.md"] == "binary file (contains NUL bytes), not text"
    assert reasons["broken.pdf"].startswith("unreadable PDF (")
    assert reasons["nope.txt"] == "no such file or folder"
    for p in problems:
        assert str(p) == f"{p.path}: {p.reason}"


def test_single_path_explicit_suffix_and_empty_folder(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "hello")
    assert [d.text for d in load_documents(f).documents] == ["hello"]
    rst = write(tmp_path / "README.rst", "Explicit files are read whatever their suffix.")
    documents, problems = load_documents([rst])
    assert len(documents) == 1 and problems == []
    (tmp_path / "empty").mkdir()
    documents, problems = load_documents([tmp_path / "empty", f])
    assert [d.text for d in documents] == ["hello"]
    assert [p.reason for p in problems] == ["folder holds no .txt, .md, .pdf files"]


def test_nothing_readable_raises_empty_corpus_with_the_reasons(tmp_path: Path) -> None:
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "latin.md", "café".encode("latin-1"))
    with pytest.raises(EmptyCorpusError, match="no readable text") as info:
        load_documents([tmp_path])
    assert "empty.txt: empty file" in str(info.value) and "latin.md: not UTF-8 text" in str(info.value)
    with pytest.raises(EmptyCorpusError, match="no files or folders given"):
        load_documents([])


def test_errors_raise_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "good")
    write(tmp_path / "b.txt", b"\x00\x01")
    with pytest.raises(DocumentLoadError, match=r"b\.txt: binary file") as info:
        load_documents([tmp_path], errors="raise")
    assert isinstance(info.value, NestError) and isinstance(info.value, ValueError)
    assert pickle.loads(pickle.dumps(info.value)).reason == info.value.reason
    with pytest.raises(ConfigError, match="errors must be"):
        load_documents([tmp_path], errors="ignore")  # type: ignore[arg-type]


def test_read_text_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DocumentLoadError, match="no such file"):
        read_text_file(tmp_path / "missing.txt")
    with pytest.raises(DocumentLoadError, match="is a folder"):
        read_text_file(tmp_path)
    latin = write(tmp_path / "latin.txt", "café".encode("latin-1"))
    assert read_text_file(latin, "latin-1").text == "café"
    with pytest.raises(DocumentLoadError, match="unknown text encoding"):
        read_text_file(latin, "no-such-codec")
    empty = write(tmp_path / "e.txt", " \n")
    assert read_text_file(empty, allow_empty=True).text == " \n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unreadable_file(tmp_path: Path) -> None:
    f = write(tmp_path / "secret.txt", "text")
    f.chmod(0)
    try:
        with pytest.raises(DocumentLoadError, match=r"cannot read \(Permission denied\)"):
            read_text_file(f)
    finally:
        f.chmod(0o644)


def test_unreadable_file_as_root_or_anyone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that fails with an OSError (permissions, I/O error) is reported, whoever runs the tests."""
    f = write(tmp_path / "secret.txt", "text")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DocumentLoadError, match=r"secret\.txt: cannot read \(Permission denied\)"):
        read_text_file(f)
    with pytest.raises(DocumentLoadError, match=r"cannot read \(Permission denied\)"):
        read_pdf_file(tmp_path / "x.pdf")


def test_pdf_pages_are_documents(tmp_path: Path) -> None:
    pypdf = pytest.importorskip("pypdf")
    path = tmp_path / "manual.pdf"
    make_pdf(path, [["Backups run every night at two.", "Keep three copies."], [], ["Restores take an hour."]])
    documents = read_file(path)
    assert [d.doc_id for d in documents] == [f"{path}#page=0", f"{path}#page=2"]  # the empty page is skipped
    pages = [page.extract_text() for page in pypdf.PdfReader(path).pages]  # re-read from disk
    for d in documents:
        n = d.metadata["page"]
        assert d.text == pages[n]
        assert d.metadata == {"source": str(path), "title": "manual.pdf", "page": n, "total_pages": 3, "page_label": str(n + 1)}
    assert "Backups run every night" in documents[0].text
    # a folder finds the PDF next to text files; without any text it is a problem, not a document
    write(tmp_path / "notes.txt", "Some notes.")
    make_pdf(tmp_path / "blank.pdf", [[]])
    documents, problems = load_documents([tmp_path])
    assert [d.doc_id for d in documents] == [f"{path}#page=0", f"{path}#page=2", str(tmp_path / "notes.txt")]
    assert [str(p) for p in problems] == [f"{tmp_path / 'blank.pdf'}: PDF without extractable text (scanned images need OCR first)"]


def test_pdf_without_pypdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    path = tmp_path / "a.pdf"
    make_pdf(path, [["text"]])
    real_import = builtins.__import__

    def no_pypdf(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "pypdf":
            raise ImportError("no pypdf")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pypdf)
    with pytest.raises(DocumentLoadError, match="PDF support needs pypdf"):
        read_pdf_file(path)


def test_files_under_is_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for name in ("b.md", "a.txt", "c.PDF", "d.csv", ".e.txt", "sub/f.txt", ".git/g.txt"):
        write(tmp_path / name, "x")
    assert [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)] == ["a.txt", "b.md", "c.PDF", "sub/f.txt"]


def test_loading_does_not_import_langchain(tmp_path: Path) -> None:
    import subprocess
    import sys

    write(tmp_path / "a.txt", "hello")
    code = (
        "import sys; from nest_integrations.loading import load_documents; "
        f"load_documents([{str(tmp_path)!r}]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain_community', 'llama_index')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
