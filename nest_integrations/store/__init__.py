"""Token store: keys (LM hidden states), values (next tokens) and their character spans, per chunk."""

from nest_integrations.store.encoder import KeyEncoder
from nest_integrations.store.key_formats import EncodedKeys, KeyFormat
from nest_integrations.store.token_store import ChunkKeys, RequestStore, TokenStore

__all__ = ["ChunkKeys", "EncodedKeys", "KeyEncoder", "KeyFormat", "RequestStore", "TokenStore"]
