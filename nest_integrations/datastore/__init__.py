"""Persistent, updatable NEST datastores (chunks, token keys, passage index) — see :class:`Datastore`."""

from nest_integrations.datastore.datastore import DEFAULT_MAX_TOKENS, Datastore
from nest_integrations.datastore.persist import FORMAT_VERSION

__all__ = ["Datastore", "DEFAULT_MAX_TOKENS", "FORMAT_VERSION"]
