"""LlamaIndex integration of nest-integrations.

This subpackage (with :mod:`nest_integrations.langchain`) is the only place that imports LlamaIndex.
Importing it is cheap: the LlamaIndex-backed helpers are loaded on first use.

- :func:`chunks_from_llama_index`: LlamaIndex documents and nodes → documents and
  :class:`~nest_integrations.chunks.Chunk` objects with verified offsets (problems reported).
- :func:`chunks_to_llama_index`: text nodes for chunks (node id = chunk id), to index a datastore's chunks.
- :class:`NestFileReader`: a reader of ``.txt`` / ``.md`` / ``.pdf`` files and folders, the same loader
  ``nest ask --docs`` and ``nest index`` use.
- :class:`NestLLM`: ``Settings.llm`` for any query engine (citations in ``additional_kwargs``); with no engine,
  context mode: NEST copies from the nodes the synthesizer put into the prompt, and
  :func:`query_with_citations` / :func:`aquery_with_citations` put those copies into the response.
- :class:`NestQueryEngine`: ``Response.source_nodes`` = the copied spans; :class:`CopiedSpanEvent` per span.
- :class:`NestRetriever`: NEST's passage stage as a LlamaIndex retriever.
- :class:`MiniLMEmbedding`: NEST's offline passage encoder as a LlamaIndex embedding model.
- :class:`LlamaIndexPassageRetriever`: any LlamaIndex retriever or ``VectorStoreIndex`` as NEST's
  passage retriever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.llama_index.documents import (
        LlamaIndexPassageRetriever,
        NestFileReader,
        chunks_from_llama_index,
        chunks_to_llama_index,
    )
    from nest_integrations.llama_index.embeddings import MiniLMEmbedding
    from nest_integrations.llama_index.llms import NestLLM, aquery_with_citations, query_with_citations
    from nest_integrations.llama_index.query_engine import CopiedSpanEvent, NestQueryEngine
    from nest_integrations.llama_index.retrievers import NestRetriever

__all__ = [
    "CopiedSpanEvent",
    "LlamaIndexPassageRetriever",
    "MiniLMEmbedding",
    "NestLLM",
    "NestFileReader",
    "NestQueryEngine",
    "NestRetriever",
    "aquery_with_citations",
    "chunks_from_llama_index",
    "chunks_to_llama_index",
    "query_with_citations",
]

_LAZY = {name: "nest_integrations.llama_index.documents" for name in __all__}
_LAZY["NestLLM"] = "nest_integrations.llama_index.llms"
_LAZY["query_with_citations"] = "nest_integrations.llama_index.llms"
_LAZY["aquery_with_citations"] = "nest_integrations.llama_index.llms"
_LAZY["NestQueryEngine"] = "nest_integrations.llama_index.query_engine"
_LAZY["CopiedSpanEvent"] = "nest_integrations.llama_index.query_engine"
_LAZY["NestRetriever"] = "nest_integrations.llama_index.retrievers"
_LAZY["MiniLMEmbedding"] = "nest_integrations.llama_index.embeddings"


def __getattr__(name: str) -> Any:
    """Import the LlamaIndex-backed helpers on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
