"""nest-integrations: NEST (Nearest Neighbor Speculative Decoding) for LangChain and LlamaIndex.

The framework-free engine lives here; ``nest_integrations.langchain`` and
``nest_integrations.llama_index`` adapt it to the frameworks.
"""

from nest_integrations.attribution import CopiedSpan
from nest_integrations.chunks import Chunk, Document, chunks_from_documents
from nest_integrations.config import NestConfig
from nest_integrations.engine import GenerationStats, NestDelta, NestEngine, NestResult, RetrievedPassage
from nest_integrations.errors import (
    ConfigError,
    DatastoreError,
    EmptyCorpusError,
    EmptyQuestionError,
    ModelNotFoundError,
    NestError,
    OffsetError,
    PromptTooLongError,
)
from nest_integrations.models import LoadedModel, default_model_dir, download_default_model, load_model

__version__ = "0.1.0"

__all__ = [
    "Chunk",
    "ConfigError",
    "CopiedSpan",
    "DatastoreError",
    "Document",
    "EmptyCorpusError",
    "EmptyQuestionError",
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
    "RetrievedPassage",
    "__version__",
    "chunks_from_documents",
    "default_model_dir",
    "download_default_model",
    "load_model",
]
