"""Load files for indexing through LangChain loaders: text / markdown exactly as on disk, PDF by page.

Used by ``nest index``. Text and markdown go through
:class:`~nest_integrations.langchain.documents.ExactTextLoader` (LangChain's ``TextLoader`` would turn
``\\r\\n`` into ``\\n`` and shift every offset); PDFs through LangChain's ``PyPDFLoader`` (one document per
page, ``page`` in the metadata; offsets then index the page's extracted text). Problems (missing,
binary, non-UTF-8, empty, unreadable PDF) are reported by file name; the rest is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from langchain_core.documents import Document as LCDocument

__all__ = ["INDEXABLE_SUFFIXES", "load_files"]

#: File endings searched for when a folder is given (files named explicitly are read as text unless PDF).
INDEXABLE_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".pdf")


def _files_under(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(INDEXABLE_SUFFIXES):
                out.append(Path(dirpath) / name)
    return out


def _load_pdf(path: Path) -> tuple[list[LCDocument], str | None]:
    try:
        from langchain_community.document_loaders import PyPDFLoader
    except ImportError:
        return [], "PDF support needs `pip install nest-integrations[langchain]` (langchain-community, pypdf)"
    try:
        pages = PyPDFLoader(str(path)).load()
    except Exception as e:  # pypdf raises many types for damaged files
        return [], f"unreadable PDF ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    pages = [p for p in pages if p.page_content.strip()]
    if not pages:
        return [], "PDF without extractable text (scanned images need OCR first)"
    return pages, None


def _load_text(path: Path) -> tuple[list[LCDocument], str | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return [], f"cannot read ({e.strerror})"
    if b"\x00" in data[:8192]:
        return [], "binary file, not text"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return [], f"not UTF-8 text (invalid byte at {e.start})"
    if not text.strip():
        return [], "empty file"
    return [LCDocument(page_content=text, metadata={"source": str(path), "title": path.name})], None


def load_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> tuple[list[LCDocument], list[str]]:
    """LangChain documents for files and folders (searched recursively for .txt, .md, .pdf).

    Returns ``(documents, problems)``; each problem is ``"<path>: <what is wrong>"``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    docs: list[LCDocument] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = _files_under(path)
            if not files:
                problems.append(f"{path}: folder holds no {', '.join(INDEXABLE_SUFFIXES)} files")
        elif path.is_file():
            files = [path]
        else:
            problems.append(f"{path}: no such file or folder")
            continue
        for f in files:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            loaded, problem = _load_pdf(f) if f.suffix.lower() == ".pdf" else _load_text(f)
            if problem:
                problems.append(f"{f}: {problem}")
            docs.extend(loaded)
    return docs, problems
