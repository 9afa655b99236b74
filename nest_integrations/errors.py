"""Typed errors raised by nest-integrations.

Every error a user can cause derives from :class:`NestError`, so callers can catch one type.
Messages name the problem and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = [
    "EvalDataError",
    "NestError",
    "ConfigError",
    "FrozenConfigError",
    "ModelNotFoundError",
    "EmptyCorpusError",
    "EmptyQuestionError",
    "PromptTooLongError",
    "DatastoreError",
    "VectorStoreError",
    "EmbeddingSizeError",
    "OffsetError",
    "DuplicateIdError",
    "DocumentLoadError",
    "UnsupportedModelError",
    "RequestCancelledError",
]


class NestError(Exception):
    """Base class of every error raised on purpose by nest-integrations."""


class ConfigError(NestError, ValueError):
    """A configuration value is out of range or inconsistent."""


class FrozenConfigError(ConfigError, AttributeError):
    """An attempt to change a field of a :class:`~nest_integrations.config.NestConfig` in place
    (configs are frozen: use ``config.replace(field=value)``)."""


class RequestCancelledError(NestError):
    """A request was cancelled (its stream closed, its asyncio task cancelled) before it finished."""


class ModelNotFoundError(NestError, FileNotFoundError):
    """The requested model is neither a local directory nor in the local Hugging Face cache, or its directory
    lacks what a model needs (config, weights, tokenizer) or holds files that cannot be loaded."""


class EmptyCorpusError(NestError, ValueError):
    """The corpus holds no usable text (no documents, or only empty / whitespace-only ones)."""


class EmptyQuestionError(NestError, ValueError):
    """The question or prompt is empty or whitespace only."""


class PromptTooLongError(NestError, ValueError):
    """The prompt (plus the tokens to generate) does not fit the model's context window."""


class DatastoreError(NestError):
    """A datastore is damaged, of an unknown format, or was built with another model."""


class VectorStoreError(DatastoreError):
    """A vector database used as the passage stage does not fit the datastore: a collection of another
    schema or embedding size, a target that is not a vector store, or retrieved documents that map to no
    chunk of the datastore (no chunk id, no source + start offset, text not found)."""


class EmbeddingSizeError(VectorStoreError, ValueError):
    """A vector collection holds vectors of another size than the passage encoder gives.

    Attributes:
        collection: the collection's name.
        found: the size of its vectors.
        expected: the encoder's size.
    """

    def __init__(self, collection: str, found: int, expected: int) -> None:
        """Say that ``collection`` holds ``found``-dimensional vectors where the encoder gives ``expected``."""
        super().__init__(
            f"collection {collection!r} holds {found}-dimensional vectors but the passage encoder gives {expected}: "
            "it was built with another embedding model; use another collection name (--collection) or drop it"
        )
        self.collection = collection
        self.found = found
        self.expected = expected

    def __reduce__(self) -> tuple[type[EmbeddingSizeError], tuple[str, int, int]]:
        """Rebuild with all three arguments (the default would pass only the message)."""
        return (type(self), (self.collection, self.found, self.expected))


class OffsetError(NestError, ValueError):
    """A chunk's character offset does not point at its text in the original document."""


class EvalDataError(NestError, ValueError):
    """An evaluation file (questions, prompts, corpus) is missing, unreadable or not in the expected format."""


class DuplicateIdError(NestError, ValueError):
    """Two documents (or two chunks) of one corpus have the same id, so citations would be ambiguous."""


class UnsupportedModelError(NestError, ValueError):
    """The model cannot run NEST: its cache cannot be rolled back after a rejected draft (recurrent / linear-attention
    state, a custom cache, or cache layers that transformers marks non-croppable)."""


class DocumentLoadError(NestError, ValueError):
    """A file or folder given as a document cannot be used (missing, unreadable, binary, not UTF-8, empty,
    a damaged PDF, a folder without text files).

    Attributes:
        path: the file or folder, as given.
        reason: what is wrong with it (the message is ``"<path>: <reason>"``).
    """

    def __init__(self, path: str, reason: str) -> None:
        """Say that ``path`` cannot be used because of ``reason``."""
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[DocumentLoadError], tuple[str, str]]:
        """Pickle with both arguments (the default would pass only the message)."""
        return (type(self), (self.path, self.reason))
