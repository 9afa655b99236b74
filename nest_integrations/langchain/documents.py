"""LangChain documents and retrievers, adapted to NEST's chunks with exact offsets.

- :func:`chunks_from_langchain` turns LangChain ``Document`` s from any loader (and their splits, from
  any text splitter) into :class:`~nest_integrations.chunks.Document` / :class:`~nest_integrations.chunks.Chunk`
  objects, checking every offset against the document text and reporting what cannot be placed.
- :class:`LangChainPassageRetriever` lets any LangChain retriever or vector store act as NEST's
  passage retriever, mapping its hits back to positions in the datastore's chunk list.
- :func:`chunks_to_langchain` gives LangChain documents for chunks (id = chunk id), for indexing a
  datastore's chunks in a LangChain vector store so that every hit maps back exactly.
- :class:`ExactTextLoader` reads a text file with its newlines as on disk (LangChain's ``TextLoader``
  turns ``\\r\\n`` into ``\\n``, so its offsets do not index the file's characters).
- :class:`NestFileLoader` reads ``.txt`` / ``.md`` / ``.pdf`` files and folders with the package's one
  loader (:func:`nest_integrations.loading.load_documents`), PDFs with ``pypdf`` (no
  ``langchain-community`` needed; its loaders, e.g. ``PyPDFLoader``, work too).

Document ids (the same rule for documents and, through their copied metadata, for splits):
``metadata[id_key]`` when ``id_key`` is given; else the document's ``id``; else its ``source``
metadata, with ``#page=N`` appended when it has a ``page`` metadata (PDF loaders give one document
per page; ``N`` is the loader's ``page`` value, 0-based for ``PyPDFLoader``); else ``doc-<i>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.document_loaders import BaseLoader
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from nest_integrations.chunks import Chunk, Document, check_unique
from nest_integrations.errors import ConfigError, DocumentLoadError
from nest_integrations.loading import load_documents, read_text_file
from nest_integrations.placement import Piece, build_chunks, char_overlap, preview
from nest_integrations.retrieval.base import ScoredChunk, check_query, clamp_k
from nest_integrations.retrieval.framework_hits import ChunkLookup, RetrievedItem, UnmatchedCallback, collect_hits

if TYPE_CHECKING:  # pragma: no cover
    from langchain_text_splitters import TextSplitter

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "ExactTextLoader",
    "LangChainPassageRetriever",
    "NestFileLoader",
    "chunks_from_langchain",
    "chunks_to_langchain",
    "langchain_document_id",
]

#: Characters per chunk of the default splitter (``RecursiveCharacterTextSplitter``).
DEFAULT_CHUNK_SIZE = 800
#: Characters shared by consecutive chunks of the default splitter.
DEFAULT_CHUNK_OVERLAP = 100

#: Metadata key holding a chunk's id in documents made by :func:`chunks_to_langchain`.
CHUNK_ID_KEY = "nest_chunk_id"


def _source_key(metadata: Mapping[str, Any]) -> str | None:
    """``source`` (+ ``#page=N``) of a document's metadata, or ``None`` without a source."""
    source = metadata.get("source")
    if source is None or source == "":
        return None
    page = metadata.get("page")
    return f"{source}#page={page}" if page is not None else str(source)


def langchain_document_id(doc: LCDocument, position: int, id_key: str | None = None) -> str:
    """The id of a LangChain document under the rule in this module's docstring.

    Args:
        doc: the document.
        position: its position in the input (for the ``doc-<i>`` fallback).
        id_key: metadata field holding the id, if the ids come from metadata.

    Raises:
        ConfigError: ``id_key`` is given but the document has no such metadata.
    """
    if id_key is not None:
        value = doc.metadata.get(id_key)
        if value is None or value == "":
            raise ConfigError(
                f"document {position} ({preview(doc.page_content, 40)}) has no metadata {id_key!r} "
                f"to take its id from (id_key={id_key!r}); its metadata keys are {sorted(doc.metadata)}"
            )
        return str(value)
    if doc.id:
        return str(doc.id)
    return _source_key(doc.metadata) or f"doc-{position}"


def _default_splitter() -> TextSplitter:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        chunk_size=DEFAULT_CHUNK_SIZE, chunk_overlap=DEFAULT_CHUNK_OVERLAP, add_start_index=True
    )


def chunks_from_langchain(
    documents: Iterable[LCDocument],
    splits: Iterable[LCDocument] | None = None,
    *,
    text_splitter: TextSplitter | None = None,
    id_key: str | None = None,
) -> tuple[list[Document], list[Chunk], list[str]]:
    """Convert LangChain documents and their splits into documents and chunks with exact offsets.

    Each split is mapped to its document: by the id rule (see the module docstring) applied to the
    split's metadata, which LangChain splitters copy from the document, or by the split's ``id``;
    failing that, to the document that contains its text (the previous split's document first). Its
    offset is an occurrence of its text in the document: the one at ``metadata["start_index"]`` when
    that is consistent, else the one found searching forward from the previous split; where the text
    occurs several times (repeated paragraphs, on which LangChain's ``str.find``-based
    ``start_index`` can point at the wrong copy), the copies are chosen so that the document's splits
    stay in order and cover its text (see :func:`~nest_integrations.placement.place_pieces`).
    A split whose text is not in its document is reported, never given a wrong offset.

    Args:
        documents: LangChain documents from any loader (``page_content`` is the document text).
        splits: their splits, in document order, from any splitter that returns verbatim pieces
            of the text. ``None``: split each document with ``text_splitter``.
        text_splitter: the splitter to use when ``splits`` is ``None`` (default:
            ``RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=100, add_start_index=True)``);
            when given with ``splits``, it tells the overlap the splits were made with.
        id_key: metadata field holding document ids (it must be set on every document and split).

    Returns:
        ``(documents, chunks, problems)``: one :class:`Document` per non-empty input document
        (``text`` = ``page_content``, its metadata); the chunks, in split order, with ids
        ``f"{doc_id}:{n}"`` (``n`` counts the document's splits), the split's metadata (with
        ``start_index`` set to the verified offset when the split had one) and
        ``doc.text[doc_offset:doc_offset + len(text)] == text``; and one message per empty document,
        whitespace-only split (dropped) or split that could not be placed (dropped).

    Raises:
        DuplicateIdError: two documents have the same id.
        ConfigError: ``id_key`` is given and a document lacks that metadata.
    """
    docs = list(documents)
    ids = [langchain_document_id(d, i, id_key) for i, d in enumerate(docs)]
    hint = (
        "pass id_key= naming a metadata field that is unique per document"
        if id_key is None
        else f"metadata {id_key!r} must be unique per document"
    )
    check_unique(ids, "documents", hint)

    problems: list[str] = []
    out_docs: list[Document] = []
    texts: dict[str, str] = {}
    for doc_id, d in zip(ids, docs, strict=True):
        if not d.page_content.strip():
            problems.append(f"{doc_id}: empty document (no text), skipped")
            continue
        texts[doc_id] = d.page_content
        out_docs.append(Document(doc_id=doc_id, text=d.page_content, metadata=dict(d.metadata)))

    if splits is None:
        splitter = text_splitter if text_splitter is not None else _default_splitter()
        overlap = char_overlap(splitter)
        pieces: list[tuple[str | None, LCDocument]] = []
        for doc_id, d in zip(ids, docs, strict=True):
            if doc_id in texts:
                pieces.extend((doc_id, s) for s in splitter.split_documents([d]))
    else:
        overlap = char_overlap(text_splitter)
        pieces = [(None, s) for s in splits]

    keys = _parent_keys(ids, docs, texts, id_key)
    counts: dict[str, int] = {}
    todo: list[Piece] = []
    prev_parent: str | None = None
    for i, (parent, split) in enumerate(pieces):
        content = split.page_content
        if parent is None:
            parent = _find_parent(split, keys, texts, id_key, prev_parent)
        if parent is None:
            why = "whitespace-only split" if not content.strip() else (
                f"split ({preview(content)}) belongs to no document (its id/source matches none and its text "
                "occurs in no document, or in several)"
            )
            problems.append(f"split {i}: {why}, dropped")
            continue
        prev_parent = parent
        n = counts.get(parent, 0)
        counts[parent] = n + 1
        chunk_id = f"{parent}:{n}"
        if not content.strip():
            problems.append(f"{chunk_id}: whitespace-only split, dropped")
            continue
        proposed = split.metadata.get("start_index")
        todo.append(Piece(chunk_id, parent, content, proposed, split.metadata, offset_key="start_index"))
    chunks, unplaced = build_chunks(todo, texts, overlap, what="split")
    problems.extend(unplaced)
    return out_docs, chunks, problems


def _parent_keys(
    ids: Sequence[str], docs: Sequence[LCDocument], texts: Mapping[str, str], id_key: str | None
) -> dict[str, str]:
    """Keys a split may carry → id of its (non-empty) document: the id itself and a unique source(+page)."""
    keys: dict[str, str] = {doc_id: doc_id for doc_id in ids if doc_id in texts}
    if id_key is None:
        by_source: dict[str, list[str]] = {}
        for doc_id, d in zip(ids, docs, strict=True):
            src = _source_key(d.metadata)
            if src is not None and doc_id in texts:
                by_source.setdefault(src, []).append(doc_id)
        for src, owners in by_source.items():
            if len(owners) == 1:
                keys.setdefault(src, owners[0])
    return keys


def _find_parent(
    split: LCDocument,
    keys: Mapping[str, str],
    texts: Mapping[str, str],
    id_key: str | None,
    prev_parent: str | None,
) -> str | None:
    """Id of the document a split comes from, or ``None`` when there is none or it is ambiguous."""
    if id_key is not None:
        value = split.metadata.get(id_key)
        candidates = [str(value)] if value is not None else []
    else:
        candidates = [c for c in (_source_key(split.metadata), split.id) if c]
    for cand in candidates:
        if cand in keys:
            return keys[cand]
    content = split.page_content
    if not content.strip():
        return prev_parent
    if prev_parent is not None and content in texts[prev_parent]:
        return prev_parent
    owners = [doc_id for doc_id, text in texts.items() if content in text]
    return owners[0] if len(owners) == 1 else None


def chunks_to_langchain(chunks: Iterable[Chunk]) -> list[LCDocument]:
    """LangChain documents for ``chunks``, to index a datastore's chunks in a LangChain vector store.

    Each document has ``id`` = the chunk id, ``page_content`` = the chunk text and the chunk's
    metadata plus ``nest_chunk_id``, ``nest_doc_id`` and ``start_index`` (= ``doc_offset``), so that
    :class:`LangChainPassageRetriever` maps every hit back to its chunk exactly. (Vector stores that
    ignore document ids still keep the metadata.)
    """
    return [
        LCDocument(
            page_content=c.text,
            id=c.chunk_id,
            metadata={**c.metadata, CHUNK_ID_KEY: c.chunk_id, "nest_doc_id": c.doc_id, "start_index": c.doc_offset},
        )
        for c in chunks
    ]


class LangChainPassageRetriever:
    """A LangChain retriever or vector store used as NEST's passage retriever.

    Implements :class:`~nest_integrations.retrieval.base.PassageRetriever` over the datastore's chunk
    list. Each document the LangChain side returns is matched to a chunk, in this order: its ``id``
    equals a chunk id; its ``nest_chunk_id`` metadata equals a chunk id; its document id (the module's
    rule applied to its metadata, or ``nest_doc_id``) and ``start_index`` equal a chunk's ``doc_id``
    and ``doc_offset`` (and the texts agree); its text equals a chunk's text. A document matching no
    chunk goes to ``on_unmatched`` if given, else it is skipped with a warning.

    Args:
        retriever: a LangChain ``BaseRetriever`` (its results are cut to ``k``; a
            ``VectorStoreRetriever`` is asked for ``k``) or ``VectorStore`` (searched with
            ``similarity_search_with_relevance_scores``, or ``similarity_search`` when the store
            has no relevance scores).
        chunks: the datastore's chunk list; hit indices are positions in it. It may grow (append only).
        on_unmatched: ``(text, metadata) -> index | None`` for a document matching no chunk: it may add
            a chunk to the list and return its position.
        id_key: the ``id_key`` used with :func:`chunks_from_langchain`, if any.

    Scores are the vector store's relevance scores when it gives them, else ``1 / (rank + 1)``.
    """

    def __init__(
        self,
        retriever: BaseRetriever | VectorStore,
        chunks: Sequence[Chunk],
        *,
        on_unmatched: UnmatchedCallback | None = None,
        id_key: str | None = None,
    ) -> None:
        if not isinstance(retriever, (BaseRetriever, VectorStore)):
            raise TypeError(
                f"expected a LangChain BaseRetriever or VectorStore, got {type(retriever).__name__}"
            )
        self.retriever = retriever
        self.chunks = chunks
        self.on_unmatched = on_unmatched
        self.id_key = id_key
        self._lookup = ChunkLookup(chunks)

    def __len__(self) -> int:
        """Number of chunks in the datastore's chunk list (now)."""
        return len(self.chunks)

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        """The best ``min(k, len(self))`` chunks for ``query``, best first (fewer if some hits match no chunk).

        Raises:
            EmptyQuestionError: ``query`` is empty or whitespace only.
            ConfigError: ``k`` is negative or not an integer.
        """
        check_query(query)
        k = clamp_k(k, len(self))
        if k == 0:
            return []
        items = [
            RetrievedItem(self._match(doc), doc.page_content, doc.metadata, score)
            for doc, score in self._search(query, k)
        ]
        return collect_hits(items, k, lambda: len(self.chunks), self.on_unmatched, "LangChain")

    def _search(self, query: str, k: int) -> list[tuple[LCDocument, float | None]]:
        r = self.retriever
        if isinstance(r, VectorStore):
            try:
                return [(d, float(s)) for d, s in r.similarity_search_with_relevance_scores(query, k=k)]
            except NotImplementedError:  # the store defines no relevance score
                return [(d, None) for d in r.similarity_search(query, k=k)]
        docs = r.invoke(query, k=k) if isinstance(r, VectorStoreRetriever) else r.invoke(query)
        return [(d, None) for d in docs[:k]]

    def _match(self, doc: LCDocument) -> int | None:
        lookup = self._lookup
        index = lookup.by_id(doc.id)
        if index is None:
            index = lookup.by_id(doc.metadata.get(CHUNK_ID_KEY))
        if index is None:
            start = doc.metadata.get("start_index")
            if start is not None:
                for doc_id in self._doc_ids(doc):
                    index = lookup.by_position(doc_id, start, doc.page_content)
                    if index is not None:
                        break
        if index is None:
            index = lookup.by_text(doc.page_content)
        return index

    def _doc_ids(self, doc: LCDocument) -> list[str]:
        """Ids the retrieved document's parent may have: ``nest_doc_id`` and the module's id rule."""
        meta = doc.metadata
        out = [str(meta["nest_doc_id"])] if meta.get("nest_doc_id") else []
        if self.id_key is not None:
            if meta.get(self.id_key) is not None:
                out.append(str(meta[self.id_key]))
        else:
            src = _source_key(meta)
            if src is not None:
                out.append(src)
        return out


class ExactTextLoader(BaseLoader):
    """Load a UTF-8 text file as one LangChain document, newlines exactly as on disk.

    LangChain's ``TextLoader`` opens files in text mode, which turns ``\\r\\n`` and ``\\r`` into ``\\n``:
    offsets into its ``page_content`` are then not offsets into the file. This loader reads the file with
    :func:`nest_integrations.loading.read_text_file` (strict UTF-8 unless ``encoding`` says otherwise, no
    newline translation), so chunk offsets index the file's characters. Usable as
    ``DirectoryLoader(..., loader_cls=ExactTextLoader)``. Metadata: ``{"source": path}``, as ``TextLoader``
    gives. An empty file gives an empty document (:func:`chunks_from_langchain` reports and skips it).
    """

    def __init__(self, file_path: str | os.PathLike[str], encoding: str | None = None) -> None:
        """Load ``file_path``, decoded with ``encoding`` (default UTF-8)."""
        self.file_path = file_path
        self.encoding = encoding or "utf-8"

    def lazy_load(self) -> Iterator[LCDocument]:
        """Yield the file's single document.

        Raises:
            DocumentLoadError: the file is missing, unreadable, binary or not valid in ``encoding`` (the
                same errors and messages as ``nest ask --docs`` / ``nest index``).
        """
        doc = read_text_file(self.file_path, self.encoding, allow_empty=True)
        yield LCDocument(page_content=doc.text, metadata={"source": str(self.file_path)})


class NestFileLoader(BaseLoader):
    """LangChain loader of ``.txt`` / ``.md`` / ``.pdf`` files and folders: the loader ``nest index`` uses.

    Reads with :func:`nest_integrations.loading.load_documents` (text exactly as on disk, PDFs page by
    page with ``pypdf``, folders recursively), so LangChain pipelines see the same documents, ids and
    errors as ``nest ask --docs`` and ``nest index``. Each document's ``id`` is its NEST document id (the
    file path, ``path#page=N`` for a PDF page), which :func:`chunks_from_langchain` keeps.

    Args:
        paths: files and/or folders.
        errors: ``raise`` (default): the first file that cannot be used raises its
            :class:`~nest_integrations.errors.DocumentLoadError`; ``skip``: it is left out and listed in
            :attr:`problems` after loading.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        errors: Literal["skip", "raise"] = "raise",
    ) -> None:
        """Load ``paths`` (files and folders)."""
        self.paths = paths
        self.errors = errors
        #: the files and folders left out by the last load (``errors="skip"``)
        self.problems: list[DocumentLoadError] = []

    def lazy_load(self) -> Iterator[LCDocument]:
        """Yield one LangChain document per text file / PDF page.

        Raises:
            DocumentLoadError: (``errors="raise"``) a file or folder cannot be used.
            EmptyCorpusError: no document could be read.
        """
        paths = [self.paths] if isinstance(self.paths, (str, os.PathLike)) else list(self.paths)
        loaded = load_documents(paths, errors=self.errors)
        self.problems = list(loaded.problems)
        for doc in loaded.documents:
            yield LCDocument(page_content=doc.text, metadata=dict(doc.metadata), id=doc.doc_id)
