"""langchain-tests standard retriever suite for NestRetriever."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from nest_integrations.langchain import NestRetriever  # noqa: E402
from tests.langchain.conftest import shared_chat_engine  # noqa: E402


class TestNestRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[NestRetriever]:
        return NestRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"engine": shared_chat_engine(), "k": 3}

    @property
    def retriever_query_example(self) -> str:
        return "Who won Super Bowl 50?"
