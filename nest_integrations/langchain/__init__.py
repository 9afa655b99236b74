"""LangChain integration of nest-integrations.

This subpackage is the only place that imports LangChain packages (the package core imports none;
its default chunking is :func:`nest_integrations.chunks.boundary_spans`). Importing it is cheap: the LangChain-backed
helpers are loaded on first use.

- :class:`ChatNest`: the chat model (citations in ``response_metadata["citations"]``); ``ChatNest()`` with no
  corpus is the drop-in LLM of an existing RAG chain (context mode), and :func:`invoke_with_citations` runs
  such a chain and maps the citations to its ``context`` documents.
- :class:`NestLLM`: completion-style LLM; :class:`NestRetriever`: the passage stage as a retriever;
  :func:`citations_to_documents`: an answer's cited spans as documents.
- :class:`NestFileLoader`: a LangChain loader of ``.txt`` / ``.md`` / ``.pdf`` files and folders, the
  same one ``nest ask --docs`` and ``nest index`` use (:func:`nest_integrations.loading.load_documents`).
- :func:`load_text_files` (= :func:`nest_integrations.loading.load_documents`) and :func:`split_documents`
  (= :func:`nest_integrations.chunks.chunks_from_documents`, which takes any LangChain ``TextSplitter``):
  the package's loader and splitter path under their older names here.
- :func:`chunks_from_langchain`: LangChain documents (any loader) and splits (any splitter) →
  documents and chunks with verified offsets (problems reported).
- :func:`chunks_to_langchain`: LangChain documents for chunks (id = chunk id), to index a datastore's chunks.
- :class:`LangChainPassageRetriever`: any LangChain retriever or vector store as NEST's passage retriever.
- :class:`MiniLMEmbeddings`: NEST's offline passage encoder as LangChain ``Embeddings``.
- :class:`ExactTextLoader`: a text-file loader that keeps ``\\r\\n`` as on disk (``TextLoader`` does not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.chunks import chunks_from_documents as split_documents
    from nest_integrations.langchain.chains import CitationCollector, ainvoke_with_citations, invoke_with_citations
    from nest_integrations.langchain.chat_models import ChatNest, UnsupportedMessageError, citations_to_documents
    from nest_integrations.langchain.documents import (
        ExactTextLoader,
        LangChainPassageRetriever,
        NestFileLoader,
        chunks_from_langchain,
        chunks_to_langchain,
    )
    from nest_integrations.langchain.embeddings import MiniLMEmbeddings
    from nest_integrations.langchain.llms import NestLLM
    from nest_integrations.langchain.retrievers import NestRetriever
    from nest_integrations.loading import load_documents as load_text_files

__all__ = [
    "UnsupportedMessageError",
    "citations_to_documents",
    "NestRetriever",
    "NestLLM",
    "ChatNest",
    "MiniLMEmbeddings",
    "ExactTextLoader",
    "LangChainPassageRetriever",
    "NestFileLoader",
    "chunks_from_langchain",
    "chunks_to_langchain",
    "load_text_files",
    "split_documents",
    "CitationCollector",
    "invoke_with_citations",
    "ainvoke_with_citations",
]

_LAZY = {
    "UnsupportedMessageError": "nest_integrations.langchain.chat_models",
    "citations_to_documents": "nest_integrations.langchain.chat_models",
    "NestRetriever": "nest_integrations.langchain.retrievers",
    "NestLLM": "nest_integrations.langchain.llms",
    "ChatNest": "nest_integrations.langchain.chat_models",
    "MiniLMEmbeddings": "nest_integrations.langchain.embeddings",
    "ExactTextLoader": "nest_integrations.langchain.documents",
    "LangChainPassageRetriever": "nest_integrations.langchain.documents",
    "NestFileLoader": "nest_integrations.langchain.documents",
    "chunks_from_langchain": "nest_integrations.langchain.documents",
    "chunks_to_langchain": "nest_integrations.langchain.documents",
    "CitationCollector": "nest_integrations.langchain.chains",
    "invoke_with_citations": "nest_integrations.langchain.chains",
    "ainvoke_with_citations": "nest_integrations.langchain.chains",
}


#: Names here for the package's own loader and splitter path: name → (module, name there).
_ALIASES = {
    "load_text_files": ("nest_integrations.loading", "load_documents"),
    "split_documents": ("nest_integrations.chunks", "chunks_from_documents"),
}


def __getattr__(name: str) -> Any:
    """Import the LangChain-backed helpers on first access."""
    module, attr = _ALIASES.get(name, (_LAZY.get(name), name))
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
