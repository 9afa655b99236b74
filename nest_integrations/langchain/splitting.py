"""Reading text files and splitting them with LangChain's text splitters, keeping exact offsets.

NEST cites every copied span as a character range of its original document, so each chunk must
know exactly where it sits in that document. LangChain's ``add_start_index=True`` computes the
start with ``str.find`` from an estimated position, which is usually right; here every start is
checked against the document text and, where it does not hold, recovered by searching forward
from the end of the previous chunk (minus the overlap). A chunk that cannot be located at all
raises :class:`~nest_integrations.errors.OffsetError`: a wrong offset is never passed on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nest_integrations.chunks import Chunk, Document, validate_chunks
from nest_integrations.errors import OffsetError

if TYPE_CHECKING:  # pragma: no cover
    from langchain_text_splitters import TextSplitter

__all__ = ["TEXT_SUFFIXES", "load_text_files", "locate_chunks", "split_documents"]

#: File name endings read when a folder is given (files named explicitly are read whatever their ending).
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md")


def load_text_files(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> tuple[list[Document], list[str]]:
    """Read UTF-8 text files into documents; folders are searched recursively for ``.txt`` / ``.md``.

    Hidden files and folders (name starting with ``.``) are skipped when walking a folder. Files are
    decoded as strict UTF-8 from their bytes, with newlines left as they are (no ``\\r\\n``
    translation), so a chunk offset is an index into exactly the characters of the file.

    Args:
        paths: files and/or folders (a single path is accepted too).

    Returns:
        ``(documents, problems)``: one :class:`~nest_integrations.chunks.Document` per readable,
        non-empty file (``doc_id`` = the file path, ``metadata`` = ``{"source": path, "title":
        file name}``), and one message per file that could not be used (missing, unreadable, binary,
        not UTF-8, empty) or folder without text files. Problems are reported, never raised.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    documents: list[Document] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = _text_files_under(path)
            if not files:
                problems.append(f"{path}: folder holds no {' or '.join(TEXT_SUFFIXES)} files")
        elif path.exists():
            files = [path]
        else:
            problems.append(f"{path}: no such file or folder")
            continue
        for file in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            text, problem = _read_text(file)
            if problem is not None:
                problems.append(f"{file}: {problem}")
            else:
                assert text is not None
                documents.append(
                    Document(doc_id=str(file), text=text, metadata={"source": str(file), "title": file.name})
                )
    return documents, problems


def _text_files_under(folder: Path) -> list[Path]:
    """``.txt`` / ``.md`` files under ``folder`` (recursively, sorted, hidden entries skipped)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(TEXT_SUFFIXES):
                found.append(Path(root) / name)
    return found


def _read_text(file: Path) -> tuple[str | None, str | None]:
    """``(text, None)`` for a usable file, else ``(None, reason)``."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        return None, f"cannot read ({exc.strerror or exc})"
    if b"\x00" in data:
        return None, "binary file (contains NUL bytes)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if not text.strip():
        return None, "empty file"
    return text, None


def split_documents(
    documents: Iterable[Document],
    chunk_size: int = 800,
    chunk_overlap: int = 0,
    *,
    splitter: TextSplitter | None = None,
) -> list[Chunk]:
    """Split documents into chunks with LangChain, each chunk carrying its exact offset.

    Args:
        documents: the documents to split.
        chunk_size: maximum characters per chunk (LangChain's ``chunk_size``).
        chunk_overlap: characters shared by consecutive chunks (LangChain's ``chunk_overlap``).
        splitter: any LangChain ``TextSplitter`` to use instead of the default
            ``RecursiveCharacterTextSplitter(chunk_size, chunk_overlap, add_start_index=True)``;
            its chunks must be verbatim pieces of the text.

    Returns:
        Chunks with ids ``f"{doc_id}#{i}"`` (``i`` counts the document's chunks), the document's
        metadata, and ``doc_offset`` such that ``doc.text[doc_offset:doc_offset + len(chunk.text)]
        == chunk.text``. Whitespace-only chunks are dropped.

    Raises:
        OffsetError: a chunk's text is not found in its document (the splitter altered the text).
        EmptyCorpusError: no chunk holds any text.
        ValueError: invalid sizes, or two documents share an id.
    """
    if splitter is None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError("chunk_overlap must be >= 0 and < chunk_size")
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True
        )
    overlap = int(getattr(splitter, "_chunk_overlap", chunk_overlap) or 0)
    out: list[Chunk] = []
    for doc in documents:
        pieces = splitter.create_documents([doc.text])
        texts = [p.page_content for p in pieces]
        starts = [p.metadata.get("start_index") for p in pieces]
        offsets = locate_chunks(doc.text, texts, starts, overlap=overlap, doc_id=doc.doc_id)
        for i, (text, start) in enumerate(zip(texts, offsets, strict=True)):
            chunk = Chunk(
                text=text,
                chunk_id=f"{doc.doc_id}#{i}",
                doc_id=doc.doc_id,
                doc_offset=start,
                metadata=dict(doc.metadata),
            )
            chunk.check_offset(doc.text)
            out.append(chunk)
    return validate_chunks(out)


def locate_chunks(
    text: str,
    chunks: Sequence[str],
    starts: Sequence[Any] | None = None,
    *,
    overlap: int = 0,
    doc_id: str = "<document>",
) -> list[int]:
    """Exact start offsets of ``chunks`` (in order) in ``text``, checking and repairing ``starts``.

    A proposed start is kept when the chunk's text is there and it is the first occurrence at or
    after ``max(previous start, previous end - overlap)`` (the earliest place the next chunk of an
    in-order splitter can start). Otherwise the chunk is searched for from that point, then from the
    previous chunk's start, then anywhere.

    Raises:
        OffsetError: a chunk's text does not occur in ``text`` at all.
    """
    out: list[int] = []
    prev_start, prev_end = -1, 0
    for i, chunk in enumerate(chunks):
        lo = max(0, prev_start, prev_end - overlap) if out else 0
        proposed = starts[i] if starts is not None and i < len(starts) else None
        expected = text.find(chunk, lo)
        if (
            isinstance(proposed, int)
            and proposed >= 0
            and text[proposed : proposed + len(chunk)] == chunk
            and proposed == expected
        ):
            start = proposed
        else:
            start = expected
            if start < 0:
                start = text.find(chunk, max(0, prev_start))
            if start < 0:
                start = text.find(chunk)
            if start < 0:
                preview = chunk if len(chunk) <= 60 else chunk[:57] + "..."
                raise OffsetError(
                    f"document {doc_id!r}: chunk {i} ({doc_id}#{i}, {preview!r}) from the text splitter does not occur "
                    "in the document text; use a splitter that returns verbatim pieces of the text"
                )
        out.append(start)
        prev_start, prev_end = start, start + len(chunk)
    return out
