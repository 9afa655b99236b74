"""Persistent, updatable NEST datastores (chunks, token keys, passage index) — see :class:`Datastore`.

:func:`index_documents` / :func:`sync_documents` keep a saved datastore in step with a set of documents
(new, changed, unchanged and removed documents), as ``nest index`` does; :func:`build_on_disk` builds a new
one with keys streamed to disk (bounded memory, resumable after a crash).
"""

from nest_integrations.datastore.builder import build_on_disk
from nest_integrations.datastore.datastore import DEFAULT_MAX_STREAMED_TOKENS, DEFAULT_MAX_TOKENS, Datastore
from nest_integrations.datastore.persist import FORMAT_VERSION
from nest_integrations.datastore.sync import SyncReport, has_datastore, index_documents, sync_documents

__all__ = [
    "Datastore",
    "DEFAULT_MAX_STREAMED_TOKENS",
    "DEFAULT_MAX_TOKENS",
    "FORMAT_VERSION",
    "SyncReport",
    "build_on_disk",
    "has_datastore",
    "index_documents",
    "sync_documents",
]
