"""The one file loader: ``.txt`` / ``.md`` exactly as on disk and ``.pdf`` page by page, files and folders.

``nest ask --docs``, ``nest index`` and the adapters' loaders
(:class:`~nest_integrations.langchain.NestFileLoader`, :class:`~nest_integrations.llama_index.NestFileReader`)
all read files with :func:`load_documents`, so the same folder gives the same documents everywhere, and a
file that cannot be used gives the same :class:`~nest_integrations.errors.DocumentLoadError` (same message).

- Text files (``.txt``, ``.md``, and any file named explicitly that is not a PDF) are decoded as strict
  UTF-8 from their bytes, newlines left as they are (no ``\\r\\n`` translation), so a chunk offset indexes
  exactly the characters of the file. One document per file: ``doc_id`` = the path,
  ``metadata`` = ``{"source": path, "title": file name}``.
- PDFs are read with ``pypdf`` (no ``langchain-community`` needed): one document per page with extractable
  text, ``doc_id`` = ``f"{path}#page={n}"`` (``n`` 0-based, the id LangChain's ``PyPDFLoader`` pages get in
  :func:`~nest_integrations.langchain.chunks_from_langchain`), ``metadata`` = ``{"source": path, "title":
  file name, "page": n, "page_label": …, "total_pages": …}``; offsets index the page's extracted text
  (``page.extract_text()``).
- Folders are searched recursively for ``.txt``, ``.md`` and ``.pdf`` files (sorted; hidden files and
  folders, whose name starts with ``.``, are skipped). A file reached twice is read once.

Nothing here imports LangChain or LlamaIndex.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NamedTuple

from nest_integrations.chunks import Document
from nest_integrations.errors import DocumentLoadError, EmptyCorpusError

__all__ = [
    "INDEXABLE_SUFFIXES",
    "LoadedDocuments",
    "PathLike",
    "files_under",
    "load_documents",
    "read_file",
    "read_pdf_file",
    "read_text_file",
]

#: File name endings searched for in folders (files named explicitly are read as text unless ``.pdf``).
INDEXABLE_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".pdf")

PathLike = str | os.PathLike[str]


class LoadedDocuments(NamedTuple):
    """What :func:`load_documents` read: the documents, and one error per file or folder it could not use."""

    documents: list[Document]
    problems: list[DocumentLoadError]


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception on one line, at most about 120 characters of message."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def read_text_file(path: PathLike, encoding: str = "utf-8", *, allow_empty: bool = False) -> Document:
    """One document for a text file, decoded strictly from its bytes (newlines as on disk).

    Args:
        path: the file.
        encoding: its text encoding (strict decoding).
        allow_empty: return a document for an empty / whitespace-only file instead of refusing it.

    Raises:
        DocumentLoadError: no such file, cannot read it, binary (NUL bytes), not valid ``encoding``, or
            empty / whitespace only (unless ``allow_empty``).
    """
    file = Path(path)
    name = str(path)
    data = _read_bytes(file, name)
    if b"\x00" in data:
        raise DocumentLoadError(name, "binary file (contains NUL bytes), not text")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DocumentLoadError(name, f"not {encoding.upper()} text ({exc.reason} at byte {exc.start})") from None
    except LookupError:
        raise DocumentLoadError(name, f"unknown text encoding {encoding!r}") from None
    if not allow_empty and not text.strip():
        raise DocumentLoadError(name, "empty file")
    return Document(doc_id=name, text=text, metadata={"source": name, "title": file.name})


def _read_bytes(file: Path, name: str) -> bytes:
    """The file's bytes, or a :class:`DocumentLoadError` naming why they cannot be read."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise DocumentLoadError(name, "no such file or folder") from None
    except IsADirectoryError:
        raise DocumentLoadError(name, "is a folder, not a file") from None
    except OSError as exc:
        raise DocumentLoadError(name, f"cannot read ({exc.strerror or _describe(exc)})") from None


def read_pdf_file(path: PathLike) -> list[Document]:
    """One document per page of a PDF that has extractable text (read with ``pypdf``).

    Raises:
        DocumentLoadError: no such file, cannot read it, ``pypdf`` is not installed, the PDF is damaged or
            encrypted, or no page holds extractable text (scanned images need OCR first).
    """
    file = Path(path)
    name = str(path)
    data = _read_bytes(file, name)
    try:
        import pypdf
    except ImportError:
        raise DocumentLoadError(
            name, "PDF support needs pypdf: `pip install pypdf` (or `pip install nest-integrations[pdf]`)"
        ) from None
    documents: list[Document] = []
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = list(reader.pages)
        try:
            labels: list[str] | None = list(reader.page_labels)
        except Exception:  # damaged label tree: pages keep their numbers
            labels = None
        for n, page in enumerate(pages):
            text = page.extract_text()
            if not text or not text.strip():
                continue
            metadata = {"source": name, "title": file.name, "page": n, "total_pages": len(pages)}
            if labels is not None and n < len(labels):
                metadata["page_label"] = labels[n]
            documents.append(Document(doc_id=f"{name}#page={n}", text=text, metadata=metadata))
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, ValueError …) for damaged files
        raise DocumentLoadError(name, f"unreadable PDF ({_describe(exc)})") from None
    if not documents:
        raise DocumentLoadError(name, "PDF without extractable text (scanned images need OCR first)")
    return documents


def read_file(path: PathLike) -> list[Document]:
    """The documents of one file: :func:`read_pdf_file` for ``.pdf``, else :func:`read_text_file`.

    Raises:
        DocumentLoadError: the file cannot be used (the message says why).
    """
    if str(path).lower().endswith(".pdf"):
        return read_pdf_file(path)
    return [read_text_file(path)]


def files_under(folder: PathLike, suffixes: tuple[str, ...] = INDEXABLE_SUFFIXES) -> list[Path]:
    """Files under ``folder`` ending in one of ``suffixes`` (recursively, sorted, hidden entries skipped)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(suffixes):
                found.append(Path(root) / name)
    return found


def load_documents(
    paths: PathLike | Iterable[PathLike],
    *,
    errors: Literal["skip", "raise"] = "skip",
) -> LoadedDocuments:
    """Read files and folders into documents (see the module docstring for what is read and how).

    Args:
        paths: files and/or folders (a single path is accepted too).
        errors: ``skip`` (default): a file or folder that cannot be used is left out and reported in
            ``problems``; ``raise``: its :class:`~nest_integrations.errors.DocumentLoadError` is raised.

    Returns:
        ``(documents, problems)``: the documents in the order the paths and folder walks give them, and one
        :class:`~nest_integrations.errors.DocumentLoadError` per file or folder left out (``str()`` of each
        is ``"<path>: <reason>"``).

    Raises:
        EmptyCorpusError: no path given, or no document could be read (the message lists why).
        DocumentLoadError: with ``errors="raise"``, the first file or folder that cannot be used.
        ConfigError: ``errors`` is neither ``skip`` nor ``raise``.
    """
    if errors not in ("skip", "raise"):
        from nest_integrations.errors import ConfigError

        raise ConfigError(f"errors must be 'skip' or 'raise', got {errors!r}")
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not given:
        raise EmptyCorpusError("no files or folders given: give .txt, .md or .pdf files, or folders holding them")
    documents: list[Document] = []
    problems: list[DocumentLoadError] = []

    def problem(exc: DocumentLoadError) -> None:
        if errors == "raise":
            raise exc
        problems.append(exc)

    seen: set[Path] = set()
    for raw in given:
        path = Path(raw)
        if path.is_dir():
            files = files_under(path)
            if not files:
                problem(DocumentLoadError(str(raw), f"folder holds no {', '.join(INDEXABLE_SUFFIXES)} files"))
        elif path.exists():
            files = [path]
        else:
            problem(DocumentLoadError(str(raw), "no such file or folder"))
            continue
        for file in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                documents.extend(read_file(file))
            except DocumentLoadError as exc:
                problem(exc)
    if not documents:
        why = "; ".join(str(p) for p in problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise EmptyCorpusError(
            f"no readable text in {', '.join(str(p) for p in given)}: give UTF-8 .txt or .md files, PDFs with "
            f"text, or folders holding them" + (f" ({why})" if why else "")
        )
    return LoadedDocuments(documents, problems)
