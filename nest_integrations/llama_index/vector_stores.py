"""A datastore's chunks in a Milvus collection, through LlamaIndex's own Milvus store
(``llama-index-vector-stores-milvus``), as the passage stage of :class:`NestQueryEngine`.

- :func:`milvus_vector_store`: a ``MilvusVectorStore`` on Milvus Lite (a local ``*.db`` file) or a Milvus
  server / cluster (an ``http(s)://`` / ``tcp://`` URI), its existing collection checked first
  (:class:`~nest_integrations.errors.EmbeddingSizeError` for vectors of another size than the encoder's).
- :func:`index_datastore`: a ``VectorStoreIndex`` over the datastore's chunks (node id = chunk id,
  ``start_char_idx`` = the chunk's offset, SOURCE = its document) in that store.
- :func:`sync_index`: the documents a sync of the datastore added / updated / deleted, reflected in it.
- :func:`query_engine`: a :class:`NestQueryEngine` over a datastore whose passages come from the index
  (e.g. ``VectorStoreIndex.from_vector_store(milvus_vector_store(uri))`` in a later process, whose docstore
  is empty, so ``NestQueryEngine.from_index`` cannot rebuild the chunks from it).

Needs the ``milvus`` extra (``pip install 'nest-integrations[milvus]'``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError, EmbeddingSizeError, VectorStoreError

__all__ = [
    "DEFAULT_COLLECTION",
    "index_datastore",
    "milvus_vector_store",
    "query_engine",
    "sync_index",
    "unmatched_error",
]

#: The collection :func:`milvus_vector_store` uses when none is given.
DEFAULT_COLLECTION = "nest_nodes"
_SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")


def _client_args(uri: str | os.PathLike[str], token: str | None) -> dict[str, Any]:
    """``MilvusClient`` keyword arguments: a server URI as it is, a Milvus Lite ``.db`` path made absolute
    with ``db_name="default"`` (pymilvus would otherwise take a database name from the path)."""
    text = os.fspath(uri)
    token = token if token is not None else os.environ.get("MILVUS_TOKEN")
    if urlparse(text).scheme.lower() in _SERVER_SCHEMES:
        return {"uri": text, "token": token or ""}
    if not text.endswith(".db"):
        raise ConfigError(
            f"Milvus target {text!r} is neither a server URI (http://, https://, tcp://, grpc://) nor a Milvus Lite "
            "file: a local Milvus Lite database is a path ending in .db"
        )
    path = Path(text).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"uri": str(path), "token": token or "", "db_name": "default"}


def _embed_dim(embed_model: Any) -> int:
    return len(embed_model.get_text_embedding("dimension probe"))


def milvus_vector_store(
    uri: str | os.PathLike[str],
    collection: str = DEFAULT_COLLECTION,
    *,
    dim: int | None = None,
    embed_model: Any = None,
    token: str | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> Any:
    """A ``MilvusVectorStore`` for ``collection`` at ``uri`` (Milvus Lite file or server URI).

    ``dim``: the embedding size (default: that of ``embed_model``, default :class:`MiniLMEmbedding`, 384).
    An existing collection is checked before the store is made, so nothing is written to a collection of
    another embedding size. ``kwargs`` go to ``MilvusVectorStore`` (its async client is off unless
    ``use_async_client=True``: it cannot be made outside a running event loop).

    Raises:
        ConfigError: the ``milvus`` extra is missing, or ``uri`` is neither a URI nor a ``.db`` path.
        EmbeddingSizeError: the collection holds vectors of another size.
        VectorStoreError: the collection has no vector field named ``embedding`` (another schema).
    """
    try:
        from llama_index.vector_stores.milvus import MilvusVectorStore
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - the extra is part of the test install
        raise ConfigError(
            "a Milvus vector store needs the milvus extra: pip install 'nest-integrations[milvus]'"
        ) from exc
    args = _client_args(uri, token)
    if dim is None:
        from nest_integrations.llama_index.embeddings import MiniLMEmbedding

        dim = _embed_dim(embed_model if embed_model is not None else MiniLMEmbedding())
    embedding_field = kwargs.get("embedding_field", "embedding")
    if not overwrite:
        # not closed: pymilvus shares one connection between the clients of one URI (the store's among them)
        client = MilvusClient(**args)
        if client.has_collection(collection):
            fields = {f["name"]: f for f in client.describe_collection(collection).get("fields", [])}
            if embedding_field not in fields:
                raise VectorStoreError(
                    f"collection {collection!r} at {os.fspath(uri)} has no {embedding_field!r} vector field (it "
                    f"has {', '.join(sorted(fields)) or 'none'}): it was not written by LlamaIndex's "
                    "MilvusVectorStore; use another collection"
                )
            found = (fields[embedding_field].get("params") or {}).get("dim")
            if found is not None and int(found) != dim:
                raise EmbeddingSizeError(collection, int(found), dim)
    kwargs.setdefault("use_async_client", False)
    kwargs.setdefault("consistency_level", "Strong")
    store = MilvusVectorStore(collection_name=collection, dim=dim, overwrite=overwrite, **args, **kwargs)
    store.client.load_collection(collection)  # a collection is released when the process that wrote it ends
    return store


def index_datastore(datastore: Any, vector_store: Any, *, embed_model: Any = None, store_nodes: bool = False) -> Any:
    """A ``VectorStoreIndex`` of ``datastore``'s chunks in ``vector_store`` (embedded with ``embed_model``,
    default :class:`MiniLMEmbedding`).

    ``store_nodes``: also keep the nodes in the index's in-memory docstore (so ``NestQueryEngine.from_index``
    can rebuild a datastore from it in this process).
    """
    from llama_index.core import StorageContext, VectorStoreIndex

    from nest_integrations.llama_index.documents import chunks_to_llama_index
    from nest_integrations.llama_index.embeddings import MiniLMEmbedding

    return VectorStoreIndex(
        chunks_to_llama_index(datastore.chunks),
        storage_context=StorageContext.from_defaults(vector_store=vector_store),
        embed_model=embed_model if embed_model is not None else MiniLMEmbedding(),
        store_nodes_override=store_nodes,
    )


def sync_index(index: Any, datastore: Any, changed: Iterable[str]) -> tuple[int, int]:
    """Reflect changed documents in ``index``: each one's nodes are deleted (``delete_ref_doc``: by document
    id in the vector store) and its current chunks in ``datastore``, if any, inserted.

    ``changed``: the ids of the documents added, updated or deleted (e.g. collected with
    :func:`~nest_integrations.datastore.sync_documents`'s ``on_change``).

    Returns:
        ``(chunks inserted, documents deleted)``.
    """
    from nest_integrations.llama_index.documents import chunks_to_llama_index

    docs = sorted(set(changed))
    for doc_id in docs:
        index.delete_ref_doc(doc_id, delete_from_docstore=True)
    present = set(docs)
    new = [c for c in datastore.chunks if c.doc_id in present]
    if new:
        index.insert_nodes(chunks_to_llama_index(new))
    return len(new), len(docs)


def _preview(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def unmatched_error(text: str, metadata: dict[str, Any]) -> int | None:
    """``on_unmatched`` callback that refuses a retrieved node mapping to no datastore chunk.

    Raises:
        VectorStoreError: always, naming the node (its chunk id, source, text).
    """
    raise VectorStoreError(
        f"the vector store returned a node that maps to no chunk of the datastore (nest_chunk_id "
        f"{metadata.get('nest_chunk_id')!r}, source {metadata.get('source') or metadata.get('file_path')!r}, text "
        f"{_preview(text)!r}): no node id or nest_chunk_id of a chunk, no document + start_char_idx of one, and "
        "its text is no chunk's text, so its offsets in the original documents cannot be recovered; index the "
        "datastore's chunks (index_datastore / chunks_to_llama_index) instead of other nodes"
    )


def query_engine(
    index: Any,
    datastore: Any,
    *,
    strict: bool = True,
    similarity_top_k: int | None = None,
    nest_config: NestConfig | None = None,
    **kwargs: Any,
) -> Any:
    """A :class:`~nest_integrations.llama_index.NestQueryEngine` answering over ``datastore`` with passages
    retrieved from ``index`` (a ``VectorStoreIndex`` or LlamaIndex retriever, e.g. over Milvus).

    ``strict``: a retrieved node mapping to no chunk raises :class:`VectorStoreError` naming it (else it is
    skipped with a warning). ``similarity_top_k``: passages per query (``NestConfig.passages``).
    """
    from nest_integrations.llama_index.documents import LlamaIndexPassageRetriever
    from nest_integrations.llama_index.query_engine import NestQueryEngine

    cfg = nest_config or NestConfig(key_layer=datastore.key_layer)
    if similarity_top_k:
        cfg = cfg.replace(passages=similarity_top_k)
    retriever = LlamaIndexPassageRetriever(index, datastore.chunks, on_unmatched=unmatched_error if strict else None)
    return NestQueryEngine(engine=datastore.engine(cfg, retriever=retriever), nest_config=cfg, **kwargs)
