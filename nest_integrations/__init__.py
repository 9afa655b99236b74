"""nest-integrations: NEST (Nearest Neighbor Speculative Decoding) for LangChain and LlamaIndex.

The framework-free engine lives here; ``nest_integrations.langchain`` and
``nest_integrations.llama_index`` adapt it to the frameworks. Names are imported on first use, so
``import nest_integrations`` (and ``nest --help``) does not load torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nest_integrations.errors import (
    ConfigError,
    DatastoreError,
    DuplicateIdError,
    EmptyCorpusError,
    EmptyQuestionError,
    EvalDataError,
    FrozenConfigError,
    ModelNotFoundError,
    NestError,
    OffsetError,
    PromptTooLongError,
    RequestCancelledError,
    UnsupportedModelError,
)

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.chunks import Chunk, Document, chunks_from_documents
    from nest_integrations.config import NestConfig
    from nest_integrations.datastore import Datastore
    from nest_integrations.engine import NestEngine
    from nest_integrations.models import LoadedModel, default_model_dir, download_default_model, load_model
    from nest_integrations.results import (
        CopiedSpan,
        GenerationStats,
        NestDelta,
        NestResult,
        RetrievedPassage,
        SentenceSupport,
    )
    from nest_integrations.sentences import split_sentences
    from nest_integrations.support import label_sentences

__version__ = "0.1.0"

_LAZY = {
    "CopiedSpan": "nest_integrations.results",
    "Chunk": "nest_integrations.chunks",
    "Document": "nest_integrations.chunks",
    "chunks_from_documents": "nest_integrations.chunks",
    "NestConfig": "nest_integrations.config",
    "Datastore": "nest_integrations.datastore",
    "GenerationStats": "nest_integrations.results",
    "NestDelta": "nest_integrations.results",
    "NestEngine": "nest_integrations.engine",
    "NestResult": "nest_integrations.results",
    "RetrievedPassage": "nest_integrations.results",
    "LoadedModel": "nest_integrations.models",
    "default_model_dir": "nest_integrations.models",
    "download_default_model": "nest_integrations.models",
    "load_model": "nest_integrations.models",
    "split_sentences": "nest_integrations.sentences",
    "SentenceSupport": "nest_integrations.results",
    "label_sentences": "nest_integrations.support",
}

__all__ = [
    "Chunk",
    "ConfigError",
    "CopiedSpan",
    "Datastore",
    "DatastoreError",
    "Document",
    "DuplicateIdError",
    "EmptyCorpusError",
    "EmptyQuestionError",
    "EvalDataError",
    "FrozenConfigError",
    "GenerationStats",
    "LoadedModel",
    "ModelNotFoundError",
    "NestConfig",
    "NestDelta",
    "NestEngine",
    "NestError",
    "NestResult",
    "OffsetError",
    "PromptTooLongError",
    "RequestCancelledError",
    "RetrievedPassage",
    "SentenceSupport",
    "UnsupportedModelError",
    "__version__",
    "chunks_from_documents",
    "default_model_dir",
    "download_default_model",
    "label_sentences",
    "load_model",
    "split_sentences",
]


def __getattr__(name: str) -> Any:
    """Import engine-side names on first access (keeps ``import nest_integrations`` light)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
