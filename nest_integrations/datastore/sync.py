"""Keeping a saved datastore in step with a set of documents (what ``nest index`` does).

:func:`sync_documents` compares the chunks of the given documents with those in a datastore, document by
document: a document not in the store is **added**, one whose chunks (texts and offsets) differ is
**updated** (re-indexed), one whose chunks are the same is left **unchanged**, and with ``prune`` a stored
document that is not among the given ones is **deleted**. Only new and changed documents get their keys
computed. :func:`index_documents` does it for a datastore directory: it loads the datastore there (or builds
a new one), syncs, and saves it atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nest_integrations.chunks import Chunk, Document, validate_chunks
from nest_integrations.datastore import persist
from nest_integrations.datastore.builder import build_on_disk
from nest_integrations.datastore.datastore import DEFAULT_MAX_TOKENS, Datastore, KeyMode
from nest_integrations.errors import DatastoreError
from nest_integrations.models import LoadedModel
from nest_integrations.store import KeyFormat
from nest_integrations.store.key_formats import AUTO_KEY_FORMAT

__all__ = ["ChangeCallback", "SyncReport", "has_datastore", "index_documents", "sync_documents"]

#: ``on_change(kind, doc_id)``, ``kind`` one of ``"added"``, ``"updated"``, ``"deleted"``: called by a sync for each
#: document it changed, after the change (e.g. to mirror the datastore into a vector database).
ChangeCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class SyncReport:
    """How many documents a sync added, updated (re-indexed), left unchanged and deleted."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def summary(self) -> str:
        """``"A added, U updated, N unchanged, D deleted"``."""
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, {self.deleted} deleted"


def _by_doc(chunks: Iterable[Chunk]) -> dict[str, list[Chunk]]:
    out: dict[str, list[Chunk]] = {}
    for c in chunks:
        out.setdefault(c.doc_id, []).append(c)
    return out


def sync_documents(
    store: Datastore,
    chunks: Iterable[Chunk],
    documents: Iterable[Document] = (),
    *,
    prune: bool = False,
    progress: bool = False,
    on_change: ChangeCallback | None = None,
) -> SyncReport:
    """Bring ``store`` in step with the documents that ``chunks`` come from (see the module docstring).

    Args:
        store: the datastore to change (in memory; save it afterwards).
        chunks: the chunks of every given document (all of each document's chunks).
        documents: the documents themselves, kept in the store for line numbers and context in citations.
        prune: also delete the stored documents that have no chunk in ``chunks``.
        progress: show a progress bar while new documents' keys are computed.
        on_change: called ``(kind, doc_id)`` for each added / updated / deleted document once the store holds
            the change (see :data:`ChangeCallback`).

    Raises:
        EmptyCorpusError: ``chunks`` holds no text.
        DuplicateIdError: two chunks share an id.
        DatastoreError: too many tokens to encode (``store.max_tokens``), or pruning would leave the store empty.
    """
    given = _by_doc(validate_chunks(chunks))
    docs_by_id = {d.doc_id: d for d in documents}
    stored = _by_doc(store.chunks)
    added = updated = unchanged = deleted = 0
    changes: list[tuple[str, str]] = []
    new_chunks: list[Chunk] = []
    new_docs: list[Document] = []
    for doc_id, cs in given.items():
        if doc_id not in stored:
            new_chunks += cs
            if doc_id in docs_by_id:
                new_docs.append(docs_by_id[doc_id])
            added += 1
            changes.append(("added", doc_id))
        elif [(c.text, c.doc_offset) for c in stored[doc_id]] != [(c.text, c.doc_offset) for c in cs]:
            store.update(doc_id, cs, document=docs_by_id.get(doc_id))
            updated += 1
            changes.append(("updated", doc_id))
        else:
            unchanged += 1
    if new_chunks:
        store.add(new_chunks, documents=new_docs, progress=progress)
    if prune:
        gone = [d for d in stored if d not in given]
        if gone:
            store.delete(gone)
            deleted = len(gone)
            changes += [("deleted", d) for d in gone]
    if on_change is not None:
        for kind, doc_id in changes:
            on_change(kind, doc_id)
    return SyncReport(added, updated, unchanged, deleted)


def has_datastore(path: str | Path) -> bool:
    """Whether directory ``path`` holds a saved datastore (a manifest; its contents are checked on load)."""
    return (Path(path) / persist.MANIFEST).is_file()


def index_documents(
    path: str | Path,
    lm: LoadedModel,
    chunks: Iterable[Chunk],
    documents: Iterable[Document] = (),
    *,
    rebuild: bool = False,
    prune: bool = False,
    max_tokens: int | None = None,
    progress: bool = False,
    key_format: str | KeyFormat | None = None,
    key_mode: KeyMode | None = None,
    on_change: ChangeCallback | None = None,
) -> tuple[Datastore, SyncReport]:
    """Build or update the datastore saved in directory ``path`` from ``chunks`` and save it.

    When ``path`` holds a datastore (and not ``rebuild``), it is loaded for ``lm`` and synced
    (:func:`sync_documents`); otherwise a new one is built from all chunks with keys streamed to disk
    (:func:`~nest_integrations.datastore.build_on_disk`: bounded memory, an interrupted build resumes on the
    next call; every document counts as added). The dense passage index is computed before the atomic save.
    ``key_format`` (``float16``, ``int8``, ``pq<M>``): how keys are stored; default: the stored datastore's
    format, ``auto`` for a new one (product quantisation, D/3 codes a token; float16 under 10,000 tokens). Giving another format for a stored datastore converts its keys.
    ``key_mode`` (a new datastore only; default ``precomputed``): ``on_the_fly`` / ``cached`` store no keys
    (each request encodes the chunks it retrieved; see :class:`Datastore`).
    ``on_change``: passed to :func:`sync_documents` when a stored datastore is synced, called after it is saved
    (a new datastore reports nothing: every document is new).

    Returns:
        The saved datastore and what changed.

    Raises:
        DatastoreError: the saved datastore is damaged or was built with another model / dtype; too many
            tokens to encode (``max_tokens``: default 2M for an update or an in-memory build, 50M for a new
            datastore with keys streamed to disk); pruning would leave it empty.
        EmptyCorpusError: ``chunks`` holds no text.
    """
    chunk_list = validate_chunks(chunks)
    doc_list = list(documents)
    streamed_cap = max_tokens
    max_tokens = max_tokens or DEFAULT_MAX_TOKENS
    if has_datastore(path) and not rebuild:
        store = Datastore.load(path, lm, max_tokens=max_tokens)
        if key_mode is not None and key_mode != store.key_mode:
            raise DatastoreError(
                f"{path} holds a datastore with key_mode={store.key_mode!r}; rebuild it (`--rebuild`) to change "
                f"it to {key_mode!r}"
            )
        changes: list[tuple[str, str]] = []
        report = sync_documents(
            store, chunk_list, doc_list, prune=prune, progress=progress, on_change=lambda k, d: changes.append((k, d))
        )
        if isinstance(key_format, str) and key_format.strip().lower() == AUTO_KEY_FORMAT:
            key_format = None  # a stored datastore keeps its format
        converting = key_format is not None and KeyFormat.parse(key_format) != store.key_format
        if report.added or report.updated or report.deleted or converting:
            store.passage_retriever("dense")
            store.save(path, key_format=key_format)
            if converting:
                store = Datastore.load(path, lm, max_tokens=max_tokens)
        if on_change is not None:
            for kind, doc_id in changes:
                on_change(kind, doc_id)
        return store, report
    if key_mode not in (None, "precomputed"):
        store = Datastore.build(
            lm, chunk_list, documents=doc_list, max_tokens=max_tokens, key_mode=key_mode, progress=progress
        )
        store.save(path)
        return store, SyncReport(added=len(store.doc_ids))
    store = build_on_disk(
        path,
        lm,
        chunk_list,
        documents=doc_list,
        max_tokens=streamed_cap,
        progress=progress,
        key_format=key_format or AUTO_KEY_FORMAT,
    )
    return store, SyncReport(added=len(store.doc_ids))
