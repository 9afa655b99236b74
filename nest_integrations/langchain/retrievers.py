"""``NestRetriever``: NEST's passage stage as a LangChain retriever (chunks with exact offsets)."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from nest_integrations.errors import ConfigError

__all__ = ["NestRetriever"]


class NestRetriever(BaseRetriever):
    """The top-``k`` chunks of a NEST engine's passage stage (hybrid dense + BM25 by default).

    Each document: ``page_content`` = the chunk text, ``id`` = the chunk id, metadata = the chunk's
    metadata plus ``doc_id``, ``chunk_id``, ``start_index`` (its offset in the document) and ``score``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    k: int = 4

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.engine is None:
            raise ConfigError("NestRetriever needs an engine (a NestEngine, e.g. ChatNest(...).engine)")
        if self.k <= 0:
            raise ConfigError(f"k must be positive (got {self.k})")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[LCDocument]:
        k = int(kwargs.get("k", self.k))
        out = []
        for i, score in self.engine.retrieve(query, k):
            c = self.engine.chunks[i]
            meta = dict(c.metadata)
            meta.update(doc_id=c.doc_id, chunk_id=c.chunk_id, start_index=c.doc_offset, score=float(score))
            out.append(LCDocument(page_content=c.text, metadata=meta, id=c.chunk_id))
        return out
