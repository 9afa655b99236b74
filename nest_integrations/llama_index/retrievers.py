"""``NestRetriever``: NEST's passage stage as a LlamaIndex retriever (nodes with exact offsets)."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode

from nest_integrations.errors import ConfigError

__all__ = ["NestRetriever"]


class NestRetriever(BaseRetriever):
    """The top-``similarity_top_k`` chunks of a NEST engine's passage stage, as ``NodeWithScore``.

    Node id = chunk id, text = chunk text, ``start_char_idx`` / ``end_char_idx`` = the chunk's place in
    its document, SOURCE relationship = the document.
    """

    def __init__(self, engine: Any, similarity_top_k: int = 4, **kwargs: Any) -> None:
        if engine is None:
            raise ConfigError("NestRetriever needs an engine")
        if similarity_top_k <= 0:
            raise ConfigError(f"similarity_top_k must be positive (got {similarity_top_k})")
        self._engine = engine
        self.similarity_top_k = similarity_top_k
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        out = []
        for i, score in self._engine.retrieve(query_bundle.query_str, self.similarity_top_k):
            c = self._engine.chunks[i]
            node = TextNode(
                id_=c.chunk_id,
                text=c.text,
                metadata=dict(c.metadata),
                start_char_idx=c.doc_offset,
                end_char_idx=c.doc_offset + len(c.text),
            )
            node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=c.doc_id)
            out.append(NodeWithScore(node=node, score=float(score)))
        return out
