"""One default-model engine over real files, shared by the LangChain suites (keeps CI fast)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest

from nest_integrations.demo import load_demo_documents


@functools.lru_cache(maxsize=1)
def corpus_dir() -> Path:
    """The demo articles written as .txt files (a real folder for LangChain's loaders)."""
    folder = Path(tempfile.mkdtemp(prefix="nest-lc-corpus-"))
    for d in load_demo_documents():
        (folder / f"{d.doc_id}.txt").write_text(d.text, encoding="utf-8")
    return folder


@functools.lru_cache(maxsize=1)
def shared_chat_engine():
    """NestEngine over the demo files loaded with DirectoryLoader and split with add_start_index=True."""
    from langchain_community.document_loaders import DirectoryLoader
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from nest_integrations.config import NestConfig
    from nest_integrations.langchain import ChatNest, ExactTextLoader
    from nest_integrations.models import default_model_dir, load_model

    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("default model not downloaded (run `nest download-model`)")
    docs = DirectoryLoader(str(corpus_dir()), glob="*.txt", loader_cls=ExactTextLoader).load()
    splitter = RecursiveCharacterTextSplitter(chunk_size=600, chunk_overlap=0, add_start_index=True)
    chat = ChatNest.from_documents(docs, text_splitter=splitter, model=load_model(dtype="float32"), nest_config=NestConfig(max_new_tokens=24))
    return chat.engine
