"""Pins the public API: a change to __all__ must be deliberate."""

import nest_integrations


def test_all_is_pinned():
    assert sorted(nest_integrations.__all__) == sorted([
        "Chunk", "ConfigError", "CopiedSpan", "DatastoreError", "Document", "EmptyCorpusError",
        "EmptyQuestionError", "GenerationStats", "LoadedModel", "ModelNotFoundError", "NestConfig", "NestDelta",
        "NestEngine", "NestError", "NestResult", "OffsetError", "PromptTooLongError", "RetrievedPassage",
        "__version__", "chunks_from_documents", "default_model_dir", "download_default_model", "load_model",
    ])
    for name in nest_integrations.__all__:
        assert hasattr(nest_integrations, name)
