"""LlamaIndex documents, nodes and retrievers, adapted to NEST's chunks with exact offsets.

- :func:`chunks_from_llama_index` turns LlamaIndex ``Document`` s (e.g. from ``SimpleDirectoryReader``)
  and their nodes (from any node parser) into :class:`~nest_integrations.chunks.Document` /
  :class:`~nest_integrations.chunks.Chunk` objects, checking every node's ``start_char_idx`` against
  the document text and reporting what cannot be placed.
- :class:`LlamaIndexPassageRetriever` lets any LlamaIndex retriever or index (e.g.
  ``VectorStoreIndex``) act as NEST's passage retriever, mapping its nodes back to positions in the
  datastore's chunk list.
- :func:`chunks_to_llama_index` gives text nodes for chunks (node id = chunk id), for indexing a
  datastore's chunks in a LlamaIndex index so that every hit maps back exactly.
- :class:`NestFileReader` reads ``.txt`` / ``.md`` / ``.pdf`` files and folders with the package's one
  loader (:func:`nest_integrations.loading.load_documents`, the one ``nest ask --docs`` and ``nest index``
  use) into LlamaIndex documents (``id_`` = the NEST document id).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.indices.base import BaseIndex
from llama_index.core.node_parser import NodeParser, SentenceSplitter
from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.schema import Document as LIDocument

from nest_integrations.chunks import Chunk, Document, check_unique
from nest_integrations.errors import DocumentLoadError
from nest_integrations.loading import load_documents
from nest_integrations.placement import Piece, build_chunks, preview
from nest_integrations.retrieval.base import ScoredChunk, check_query, clamp_k
from nest_integrations.retrieval.framework_hits import ChunkLookup, RetrievedItem, UnmatchedCallback, collect_hits

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "LlamaIndexPassageRetriever",
    "NestFileReader",
    "chunks_from_llama_index",
    "chunks_to_llama_index",
]

#: Tokens per node of the default node parser (``SentenceSplitter``; about 1,000 characters of English).
DEFAULT_CHUNK_SIZE = 256
#: Tokens shared by consecutive nodes of the default node parser.
DEFAULT_CHUNK_OVERLAP = 32

#: Metadata key holding a chunk's id in nodes made by :func:`chunks_to_llama_index`.
CHUNK_ID_KEY = "nest_chunk_id"
_DOC_ID_KEY = "nest_doc_id"


def _with_source(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata``, with ``source`` = ``file_path`` added when it has a file path but no source."""
    out = dict(metadata)
    if "source" not in out and out.get("file_path"):
        out["source"] = str(out["file_path"])
    return out


def _content(node: BaseNode) -> str:
    """A node's own text (no metadata)."""
    return node.get_content(metadata_mode=MetadataMode.NONE)


def _source_id(node: BaseNode) -> str | None:
    """Id of the document a node was parsed from (its SOURCE relationship), if it has one."""
    try:
        source = node.source_node
    except ValueError:  # a SOURCE relationship holding a list
        return None
    return source.node_id if source is not None else None


def _default_node_parser() -> NodeParser:
    return SentenceSplitter(chunk_size=DEFAULT_CHUNK_SIZE, chunk_overlap=DEFAULT_CHUNK_OVERLAP)


def chunks_from_llama_index(
    documents: Iterable[LIDocument],
    nodes: Iterable[BaseNode] | None = None,
    *,
    node_parser: NodeParser | None = None,
) -> tuple[list[Document], list[Chunk], list[str]]:
    """Convert LlamaIndex documents and their nodes into documents and chunks with exact offsets.

    Each node is mapped to its document through its SOURCE relationship (``ref_doc_id``); failing
    that, to the document that contains its text (the previous node's document first). Its offset is an
    occurrence of its text (``get_content(MetadataMode.NONE)``) in ``doc.text``: the one at its
    ``start_char_idx`` when that is consistent, else the one found searching forward from the previous
    node; where the text occurs several times (repeated paragraphs, on which the node parsers'
    ``str.find`` from just after the previous node's start can land on an earlier copy), the copies are
    chosen so that the document's nodes stay in order and cover its text (see
    :func:`~nest_integrations.placement.place_pieces`). A node whose text is not in its document
    is reported, never given a wrong offset.

    Args:
        documents: LlamaIndex documents (``doc_id`` = their ``id_``; ``text`` = the document text).
        nodes: their nodes, in document order, from any node parser that returns verbatim pieces of
            the text. ``None``: parse the documents with ``node_parser``.
        node_parser: the parser used when ``nodes`` is ``None`` (default:
            ``SentenceSplitter(chunk_size=256, chunk_overlap=32)``, sizes in tokens); when given with
            ``nodes``, a ``chunk_overlap`` of 0 tells that the nodes do not overlap.

    Returns:
        ``(documents, chunks, problems)``: one :class:`Document` per non-empty input document (its
        metadata, plus ``source`` = ``file_path`` when it has a file path but no ``source``); the
        chunks, in node order, with ``chunk_id`` = the node id, the node's metadata (plus ``source``
        likewise) and ``doc.text[doc_offset:doc_offset + len(text)] == text`` where ``text`` is the
        node's content without metadata; and one message per empty document, whitespace-only node
        (dropped) or node that could not be placed (dropped).

    Raises:
        DuplicateIdError: two documents, or two nodes, have the same id.
    """
    docs = list(documents)
    ids = [d.doc_id for d in docs]
    check_unique(ids, "documents", "give each document its own id_ (SimpleDirectoryReader: filename_as_id=True)")

    problems: list[str] = []
    out_docs: list[Document] = []
    texts: dict[str, str] = {}
    for doc_id, d in zip(ids, docs, strict=True):
        text = d.text or ""
        if not text.strip():
            problems.append(f"{doc_id}: empty document (no text), skipped")
            continue
        texts[doc_id] = text
        out_docs.append(Document(doc_id=doc_id, text=text, metadata=_with_source(d.metadata)))

    parser = node_parser
    if nodes is None:
        if parser is None:
            parser = _default_node_parser()
        node_list = list(parser.get_nodes_from_documents([d for d in docs if d.doc_id in texts]))
    else:
        node_list = list(nodes)
    # a parser without overlap (in any unit) puts each node at or after the previous node's end
    overlap = 0 if parser is not None and getattr(parser, "chunk_overlap", None) == 0 else None
    check_unique((n.node_id for n in node_list), "nodes", "each node must have its own node_id")

    todo: list[Piece] = []
    prev_parent: str | None = None
    for node in node_list:
        content = _content(node)
        if not content.strip():
            problems.append(f"{node.node_id}: whitespace-only node, dropped")
            continue
        parent = _find_parent(node, content, texts, prev_parent)
        if parent is None:
            problems.append(
                f"{node.node_id} ({preview(content)}): belongs to no document (its ref_doc_id matches none and its "
                "text occurs in no document, or in several), dropped"
            )
            continue
        prev_parent = parent
        proposed = getattr(node, "start_char_idx", None)
        todo.append(Piece(node.node_id, parent, content, proposed, _with_source(node.metadata)))
    chunks, unplaced = build_chunks(todo, texts, overlap, what="node")
    problems.extend(unplaced)
    return out_docs, chunks, problems


def _find_parent(node: BaseNode, content: str, texts: Mapping[str, str], prev_parent: str | None) -> str | None:
    """Id of the document a node comes from, or ``None`` when there is none or it is ambiguous."""
    ref = _source_id(node)
    if ref is not None and ref in texts:
        return ref
    if prev_parent is not None and content in texts[prev_parent]:
        return prev_parent
    owners = [doc_id for doc_id, text in texts.items() if content in text]
    return owners[0] if len(owners) == 1 else None


def chunks_to_llama_index(chunks: Iterable[Chunk]) -> list[TextNode]:
    """Text nodes for ``chunks``, to index a datastore's chunks in a LlamaIndex index.

    Each node has ``node_id`` = the chunk id, the chunk text, ``start_char_idx`` / ``end_char_idx``
    = the chunk's span, a SOURCE relationship to its document, and the chunk's metadata plus
    ``nest_chunk_id`` / ``nest_doc_id`` (kept out of the text that is embedded or shown to an LLM).
    """
    nodes: list[TextNode] = []
    for c in chunks:
        node = TextNode(
            id_=c.chunk_id,
            text=c.text,
            metadata={**c.metadata, CHUNK_ID_KEY: c.chunk_id, _DOC_ID_KEY: c.doc_id},
            start_char_idx=c.doc_offset,
            end_char_idx=c.doc_offset + len(c.text),
            excluded_embed_metadata_keys=[CHUNK_ID_KEY, _DOC_ID_KEY],
            excluded_llm_metadata_keys=[CHUNK_ID_KEY, _DOC_ID_KEY],
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=c.doc_id)
        nodes.append(node)
    return nodes


class LlamaIndexPassageRetriever:
    """A LlamaIndex retriever or index used as NEST's passage retriever.

    Implements :class:`~nest_integrations.retrieval.base.PassageRetriever` over the datastore's chunk
    list. Each ``NodeWithScore`` the LlamaIndex side returns is matched to a chunk, in this order: its
    node id equals a chunk id; its ``nest_chunk_id`` metadata equals a chunk id; its document
    (``ref_doc_id``, or ``nest_doc_id``) and ``start_char_idx`` equal a chunk's ``doc_id`` and
    ``doc_offset`` (and the texts agree); its text equals a chunk's text. A node matching no chunk goes
    to ``on_unmatched`` if given, else it is skipped with a warning.

    Args:
        retriever: a LlamaIndex ``BaseRetriever`` (its results are cut to ``k``) or index such as
            ``VectorStoreIndex`` (queried through ``index.as_retriever(similarity_top_k=k)``).
        chunks: the datastore's chunk list; hit indices are positions in it. It may grow (append only).
        on_unmatched: ``(text, metadata) -> index | None`` for a node matching no chunk: it may add a
            chunk to the list and return its position.

    Scores are the nodes' scores when every node has one, else ``1 / (rank + 1)``.
    """

    def __init__(
        self,
        retriever: BaseRetriever | BaseIndex,
        chunks: Sequence[Chunk],
        *,
        on_unmatched: UnmatchedCallback | None = None,
    ) -> None:
        if not isinstance(retriever, (BaseRetriever, BaseIndex)):
            raise TypeError(
                f"expected a LlamaIndex BaseRetriever or index (e.g. VectorStoreIndex), got {type(retriever).__name__}"
            )
        self.retriever = retriever
        self.chunks = chunks
        self.on_unmatched = on_unmatched
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
        r = self.retriever
        if isinstance(r, BaseIndex):
            try:
                index_retriever = r.as_retriever(similarity_top_k=k)
            except TypeError:  # an index whose retriever takes no similarity_top_k: cut its results below
                index_retriever = r.as_retriever()
            results = index_retriever.retrieve(query)
        else:
            results = r.retrieve(query)
        items = []
        for hit in results[:k]:
            text = _content(hit.node)
            items.append(RetrievedItem(self._match(hit.node, text), text, hit.node.metadata, hit.score))
        return collect_hits(items, k, lambda: len(self.chunks), self.on_unmatched, "LlamaIndex")

    def _match(self, node: BaseNode, text: str) -> int | None:
        lookup = self._lookup
        index = lookup.by_id(node.node_id)
        if index is None:
            index = lookup.by_id(node.metadata.get(CHUNK_ID_KEY))
        if index is None:
            start = getattr(node, "start_char_idx", None)
            if start is not None:
                for doc_id in (_source_id(node), node.metadata.get(_DOC_ID_KEY)):
                    index = lookup.by_position(doc_id, start, text)
                    if index is not None:
                        break
        if index is None:
            index = lookup.by_text(text)
        return index


class NestFileReader(BaseReader):
    """LlamaIndex reader of ``.txt`` / ``.md`` / ``.pdf`` files and folders: the loader ``nest index`` uses.

    Reads with :func:`nest_integrations.loading.load_documents` (text exactly as on disk, PDFs page by page
    with ``pypdf``, folders recursively), so LlamaIndex pipelines see the same documents, ids and errors as
    ``nest ask --docs`` and ``nest index``: one LlamaIndex ``Document`` per text file / PDF page with
    ``id_`` = its NEST document id (the file path; ``path#page=N`` for a PDF page) and its metadata
    (``source``, ``title``; ``page`` … for PDFs).

    Args:
        errors: ``raise`` (default): the first file that cannot be used raises its
            :class:`~nest_integrations.errors.DocumentLoadError`; ``skip``: it is left out and listed in
            :attr:`problems` after loading.
    """

    def __init__(self, *, errors: Literal["skip", "raise"] = "raise") -> None:
        """A reader; give the paths to :meth:`load_data`."""
        self.errors = errors
        #: the files and folders left out by the last load (``errors="skip"``)
        self.problems: list[DocumentLoadError] = []

    def load_data(  # type: ignore[override]
        self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
    ) -> list[LIDocument]:
        """LlamaIndex documents of the files and folders in ``paths``.

        Raises:
            DocumentLoadError: (``errors="raise"``) a file or folder cannot be used.
            EmptyCorpusError: no document could be read.
        """
        loaded = load_documents(paths, errors=self.errors)
        self.problems = list(loaded.problems)
        return [LIDocument(id_=d.doc_id, text=d.text, metadata=dict(d.metadata)) for d in loaded.documents]

    def lazy_load_data(  # type: ignore[override]
        self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
    ) -> Iterable[LIDocument]:
        """:meth:`load_data`, as an iterator."""
        return iter(self.load_data(paths))
