"""A datastore's chunks in a Milvus collection, through LangChain's own Milvus store (``langchain-milvus``).

:class:`MilvusChunkStore` wraps ``langchain_milvus.Milvus`` with NEST's offline passage encoder
(:class:`~nest_integrations.langchain.embeddings.MiniLMEmbeddings`, 384-d). Each entity is one datastore
chunk: primary key ``pk`` = the chunk id, ``text`` = the chunk text, ``vector`` = its embedding, and the
chunk's metadata plus ``nest_chunk_id``, ``nest_doc_id`` and ``start_index`` (= ``doc_offset``) as dynamic
fields (:func:`~nest_integrations.langchain.documents.chunks_to_langchain`), so every hit maps back to its
chunk exactly and copied spans keep their offsets in the original documents.

The target is Milvus Lite (the embedded engine: a local file path ending in ``.db``) or a Milvus server /
cluster (an ``http://``, ``https://``, ``tcp://``, ``grpc://`` or ``unix:`` URI; a token, if the server needs
one, from ``token=`` or ``$MILVUS_TOKEN``): the same client code serves both. ``nest index --vector-store
milvus:PATH_OR_URI`` writes and syncs such a collection, ``nest ask --store DIR --vector-store ...`` retrieves
from it.

Needs the ``milvus`` extra (``pip install 'nest-integrations[milvus]'``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nest_integrations.chunks import Chunk
from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError, EmbeddingSizeError, VectorStoreError

__all__ = [
    "DEFAULT_COLLECTION",
    "MilvusChunkStore",
    "MilvusSyncReport",
    "milvus_connection_args",
    "parse_vector_store",
    "unmatched_error",
]

#: The collection ``nest index --vector-store`` writes when no ``--collection`` is given.
DEFAULT_COLLECTION = "nest_chunks"
#: URI schemes of a Milvus server or cluster (anything else must be a Milvus Lite ``.db`` file).
SERVER_SCHEMES = ("http", "https", "tcp", "grpc", "unix")
_BATCH = 256


def parse_vector_store(spec: str) -> str:
    """The Milvus URI or path of a ``--vector-store`` value ``milvus:PATH_OR_URI``.

    Raises:
        ConfigError: not ``milvus:...``, or nothing after the colon.
    """
    kind, sep, target = spec.partition(":")
    if not sep or kind.lower() != "milvus":
        raise ConfigError(
            f"unknown vector store {spec!r}: expected milvus:PATH.db (Milvus Lite) or milvus:http://HOST:19530 "
            "(a Milvus server or cluster)"
        )
    if not target.strip():
        raise ConfigError(f"{spec!r} names no Milvus target: give milvus:PATH.db or milvus:http://HOST:19530")
    return target.strip()


def milvus_connection_args(uri: str | os.PathLike[str], token: str | None = None) -> dict[str, Any]:
    """``connection_args`` for ``langchain_milvus.Milvus`` (the keyword arguments of ``MilvusClient``).

    A server URI is passed as it is (with ``token``, or ``$MILVUS_TOKEN`` when set). A local path must end
    in ``.db`` (Milvus Lite); it is made absolute, its folder created, and ``db_name="default"`` given (the
    one database of Milvus Lite; pymilvus would otherwise take a database name from the path).

    Raises:
        ConfigError: a local path that does not end in ``.db``.
    """
    text = os.fspath(uri)
    token = token if token is not None else os.environ.get("MILVUS_TOKEN")
    if urlparse(text).scheme.lower() in SERVER_SCHEMES:
        args: dict[str, Any] = {"uri": text}
        if token:
            args["token"] = token
        return args
    if not text.endswith(".db"):
        raise ConfigError(
            f"Milvus target {text!r} is neither a server URI (http://, https://, tcp://, grpc://) nor a Milvus Lite "
            "file: a local Milvus Lite database is a path ending in .db"
        )
    path = Path(text).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"uri": str(path), "db_name": "default"}


def _quote(values: Iterable[str]) -> str:
    """A Milvus filter list literal of strings (JSON string syntax: double quotes, backslash escapes)."""
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _preview(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def unmatched_error(text: str, metadata: dict[str, Any]) -> int | None:
    """``on_unmatched`` callback that refuses a retrieved document mapping to no datastore chunk.

    Raises:
        VectorStoreError: always, naming the document (its id, source, start offset and text).
    """
    ident = metadata.get("pk") or metadata.get("nest_chunk_id") or metadata.get("id")
    raise VectorStoreError(
        f"the vector store returned a document that maps to no chunk of the datastore (id {ident!r}, source "
        f"{metadata.get('source')!r}, start_index {metadata.get('start_index')!r}, text {_preview(text)!r}): "
        "it has no nest_chunk_id of a chunk, no source + start_index of one, and its text is no chunk's text, so "
        "its offsets in the original documents cannot be recovered; index the datastore's chunks "
        "(`nest index --vector-store`, MilvusChunkStore.sync or chunks_to_langchain) instead of other documents"
    )


@dataclass(frozen=True)
class MilvusSyncReport:
    """What a sync changed in the collection: chunks added and deleted, the entities now in it, and whether
    the collection had to be rewritten from all chunks because it did not match the datastore."""

    added: int = 0
    deleted: int = 0
    total: int = 0
    rewritten: bool = False

    def summary(self) -> str:
        """``"N chunks (A added, D deleted)"`` (plus ``", rewritten"`` when the collection was rewritten)."""
        tail = ", rewritten" if self.rewritten else ""
        return f"{self.total} chunks ({self.added} added, {self.deleted} deleted{tail})"


class MilvusChunkStore:
    """A datastore's chunks in one Milvus collection, through ``langchain_milvus.Milvus``.

    Args:
        uri: a Milvus Lite file (``*.db``) or a server / cluster URI (see :func:`milvus_connection_args`).
        collection: the collection name.
        embeddings: the LangChain embeddings (default: :class:`MiniLMEmbeddings`, NEST's passage encoder).
        token: a server token (default ``$MILVUS_TOKEN``).

    Opening checks an existing collection before anything is written (:meth:`check`).

    Attributes:
        store: the ``langchain_milvus.Milvus`` vector store (``store.as_retriever()``, ``store.client``).

    Raises:
        ConfigError: the ``milvus`` extra is not installed, or ``uri`` is neither a URI nor a ``.db`` path.
        EmbeddingSizeError: the collection holds vectors of another size than ``embeddings`` gives.
        VectorStoreError: the collection has another schema (no ``vector`` / ``pk`` / ``text`` field).
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        collection: str = DEFAULT_COLLECTION,
        *,
        embeddings: Any = None,
        token: str | None = None,
    ) -> None:
        try:
            from langchain_milvus import Milvus
        except ImportError as exc:  # pragma: no cover - the extra is part of the test install
            raise ConfigError(
                "a Milvus vector store needs the milvus extra: pip install 'nest-integrations[milvus]'"
            ) from exc
        from nest_integrations.langchain.embeddings import MiniLMEmbeddings

        self.uri = os.fspath(uri)
        self.collection = collection
        self.embeddings = embeddings if embeddings is not None else MiniLMEmbeddings()
        self._dim: int | None = None
        # it logs a warning when it cannot make its async client yet (no running event loop): it makes one when
        # an async method is called
        from pymilvus.exceptions import MilvusException

        log = logging.getLogger("langchain_milvus.vectorstores.milvus")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            self.store = Milvus(
                self.embeddings,
                connection_args=milvus_connection_args(uri, token),
                collection_name=collection,
                auto_id=False,
                enable_dynamic_field=True,
                primary_field="pk",
                text_field="text",
                vector_field="vector",
                consistency_level="Strong",
            )
            self.check()
            if self.exists():  # a collection is released when the process that wrote it ends
                self.client.load_collection(collection)
        except MilvusException as exc:
            hint = ""
            if "uri" in (args := milvus_connection_args(uri, token)) and "db_name" in args:
                hint = " (Milvus Lite opens a file in one process at a time: is another process using it?)"
            raise VectorStoreError(f"cannot use Milvus collection {collection!r} at {self.uri}: {exc}{hint}") from exc
        finally:
            log.setLevel(level)

    # ---- state ----------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The ``pymilvus.MilvusClient`` of the store."""
        return self.store.client

    @property
    def dim(self) -> int:
        """The size of the embeddings' vectors (computed once, from one probe text)."""
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension probe"))
        return self._dim

    def exists(self) -> bool:
        """Whether the collection exists."""
        return bool(self.client.has_collection(self.collection))

    def check(self) -> None:
        """Check an existing collection's schema and vector size against the embeddings (writes nothing).

        Raises:
            EmbeddingSizeError: its vectors have another size than the embeddings'.
            VectorStoreError: it lacks the ``pk`` / ``text`` / ``vector`` fields langchain-milvus writes.
        """
        if not self.exists():
            return
        info = self.client.describe_collection(self.collection)
        fields = {f["name"]: f for f in info.get("fields", [])}
        missing = [name for name in ("pk", "text", "vector") if name not in fields]
        if missing:
            raise VectorStoreError(
                f"collection {self.collection!r} at {self.uri} has no {', '.join(missing)} field(s) (it has "
                f"{', '.join(sorted(fields)) or 'none'}): it was not written by langchain-milvus / `nest index "
                "--vector-store`; use another --collection"
            )
        found = (fields["vector"].get("params") or {}).get("dim")
        if found is not None and int(found) != self.dim:
            raise EmbeddingSizeError(self.collection, int(found), self.dim)

    def count(self) -> int:
        """How many entities (chunks) the collection holds (0 when it does not exist)."""
        if not self.exists():
            return 0
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    def ids(self, doc_id: str | None = None) -> set[str]:
        """The primary keys (chunk ids) in the collection, or those of document ``doc_id``."""
        if not self.exists():
            return set()
        expr = 'pk != ""' if doc_id is None else f"nest_doc_id == {json.dumps(doc_id, ensure_ascii=False)}"
        out: set[str] = set()
        it = self.client.query_iterator(self.collection, batch_size=1000, filter=expr, output_fields=["pk"])
        try:
            while rows := it.next():
                out.update(str(r["pk"]) for r in rows)
        finally:
            it.close()
        return out

    # ---- writing --------------------------------------------------------------------------------
    def add_chunks(self, chunks: Sequence[Chunk]) -> int:
        """Embed ``chunks`` and insert them (id = chunk id); returns how many were added."""
        from nest_integrations.langchain.documents import chunks_to_langchain

        chunks = list(chunks)
        for start in range(0, len(chunks), _BATCH):
            part = chunks[start : start + _BATCH]
            self.store.add_documents(chunks_to_langchain(part), ids=[c.chunk_id for c in part])
        return len(chunks)

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete every chunk of the given documents; returns how many entities were deleted."""
        ids = sorted(set(doc_ids))
        if not ids or not self.exists():
            return 0
        before = self.count()
        for start in range(0, len(ids), 100):
            self.client.delete(self.collection, filter=f"nest_doc_id in {_quote(ids[start : start + 100])}")
        return before - self.count()

    def clear(self) -> int:
        """Delete every entity of the collection (keeping the collection); returns how many."""
        if not self.exists():
            return 0
        before = self.count()
        self.client.delete(self.collection, filter='pk != ""')
        return before - self.count()

    def sync(self, datastore: Any, changed: Iterable[str] | None = None) -> MilvusSyncReport:
        """Bring the collection in step with ``datastore``'s chunks.

        ``changed``: the documents that were added, updated or deleted since the collection last matched the
        datastore (what :func:`~nest_integrations.datastore.index_documents` reports through ``on_change``):
        their entities are deleted and their current chunks added. ``None`` (a new datastore) rewrites the
        collection. When the collection then holds another number of chunks than the datastore (it is new,
        was filled from another datastore, or a sync was interrupted), it is rewritten from all chunks.
        """
        chunks = list(datastore.chunks)
        added = deleted = 0
        if changed is not None:
            docs = set(changed)
            if docs:
                deleted = self.delete_documents(docs)
                added = self.add_chunks([c for c in chunks if c.doc_id in docs])
            if self.count() == len(chunks):
                return MilvusSyncReport(added=added, deleted=deleted, total=len(chunks))
        deleted += self.clear()
        added += self.add_chunks(chunks)
        return MilvusSyncReport(added=added, deleted=deleted, total=self.count(), rewritten=changed is not None)

    # ---- reading --------------------------------------------------------------------------------
    def as_retriever(self, **kwargs: Any) -> Any:
        """The LangChain ``VectorStoreRetriever`` of the store (``store.as_retriever(**kwargs)``)."""
        return self.store.as_retriever(**kwargs)

    def passage_retriever(self, datastore: Any, *, strict: bool = True) -> Any:
        """The collection as NEST's passage stage over ``datastore``'s chunks.

        ``strict``: a retrieved document mapping to no chunk raises :class:`VectorStoreError` naming it
        (:func:`unmatched_error`); otherwise it is skipped with a warning (what
        :class:`~nest_integrations.langchain.documents.LangChainPassageRetriever` does by default).
        """
        from nest_integrations.langchain.documents import LangChainPassageRetriever

        return LangChainPassageRetriever(self.store, datastore.chunks, on_unmatched=unmatched_error if strict else None)

    def check_datastore(self, datastore: Any) -> None:
        """Check that the collection can serve ``datastore``: it exists and holds chunks (a warning when their
        number differs from the datastore's: run ``nest index --vector-store`` again).

        Raises:
            VectorStoreError: the collection does not exist or is empty.
        """
        n = self.count()
        if n == 0:
            raise VectorStoreError(
                f"Milvus collection {self.collection!r} at {self.uri} is missing or empty: fill it with "
                f"`nest index PATH --out DIR --vector-store milvus:{self.uri} --collection {self.collection}`"
            )
        if n != len(datastore.chunks):
            warnings.warn(
                f"Milvus collection {self.collection!r} holds {n} chunks, the datastore {len(datastore.chunks)}: "
                "re-run `nest index` with --vector-store to sync them",
                UserWarning,
                stacklevel=2,
            )

    def engine(self, datastore: Any, config: NestConfig | None = None, *, strict: bool = True) -> Any:
        """A :class:`~nest_integrations.engine.NestEngine` over ``datastore`` retrieving from the collection.

        Raises:
            VectorStoreError: the collection is missing or empty (:meth:`check_datastore`).
        """
        self.check_datastore(datastore)
        cfg = config or NestConfig(key_layer=datastore.key_layer)
        return datastore.engine(cfg, retriever=self.passage_retriever(datastore, strict=strict))

    def chat_model(
        self, datastore: Any, *, nest_config: NestConfig | None = None, strict: bool = True, **kwargs: Any
    ) -> Any:
        """A :class:`~nest_integrations.langchain.ChatNest` whose passage stage is the collection
        (like ``ChatNest.from_retriever(self.store, datastore)``, refusing unmatched documents when ``strict``)."""
        from nest_integrations.langchain.chat_models import ChatNest

        cfg = nest_config or NestConfig(key_layer=datastore.key_layer)
        return ChatNest(engine=self.engine(datastore, cfg, strict=strict), nest_config=cfg, **kwargs)
