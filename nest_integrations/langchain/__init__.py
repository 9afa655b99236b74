"""LangChain integration of nest-integrations.

This subpackage is the only place that imports LangChain packages. Importing it is cheap: the
LangChain-backed helpers are loaded on first use.

- :func:`load_text_files`: read ``.txt`` / ``.md`` files (folders recursively) into documents,
  reporting unreadable ones instead of failing.
- :func:`split_documents`: split documents with LangChain's ``RecursiveCharacterTextSplitter`` into
  :class:`~nest_integrations.chunks.Chunk` objects whose offsets are exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.langchain.splitting import load_text_files, split_documents

__all__ = ["load_text_files", "split_documents"]

_LAZY = {
    "load_text_files": "nest_integrations.langchain.splitting",
    "split_documents": "nest_integrations.langchain.splitting",
}


def __getattr__(name: str) -> Any:
    """Import the LangChain-backed helpers on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
