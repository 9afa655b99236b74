"""Pins the public API: a change to __all__ must be deliberate."""

import nest_integrations


def test_all_is_pinned():
    assert sorted(nest_integrations.__all__) == sorted(
        [
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
    )
    for name in nest_integrations.__all__:
        assert hasattr(nest_integrations, name)


def test_import_is_light():
    """``import nest_integrations`` (and so ``nest --help``) must not load torch or the frameworks."""
    import subprocess
    import sys

    code = (
        "import sys, nest_integrations, nest_integrations.langchain, nest_integrations.llama_index; "
        "print(sorted(m for m in ('torch', 'transformers', 'langchain_core', 'llama_index') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_server_all_is_pinned():
    import nest_integrations.server as server

    assert sorted(server.__all__) == ["NestService", "QueueFullError", "ServerSettings", "create_app", "serve"]
    for name in server.__all__:
        assert hasattr(server, name)


def test_cli_does_not_import_the_server_stack():
    """``nest --help`` stays cheap: FastAPI / uvicorn load only when ``nest serve`` runs."""
    import subprocess
    import sys

    code = (
        "import sys; from nest_integrations.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'sse_starlette', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_datastore_and_store_all_are_pinned():
    import nest_integrations.datastore as ds
    import nest_integrations.store as st

    assert sorted(ds.__all__) == sorted(
        [
            "Datastore",
            "DEFAULT_MAX_STREAMED_TOKENS",
            "DEFAULT_MAX_TOKENS",
            "FORMAT_VERSION",
            "SyncReport",
            "build_on_disk",
            "has_datastore",
            "index_documents",
            "sync_documents",
        ]
    )
    assert sorted(st.__all__) == sorted(
        ["ChunkKeys", "EncodedKeys", "KeyEncoder", "KeyFormat", "RequestStore", "TokenStore"]
    )
    for mod in (ds, st):
        for name in mod.__all__:
            assert hasattr(mod, name)
