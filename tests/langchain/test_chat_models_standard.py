"""langchain-tests standard suites for ChatNest on the default model (one shared engine)."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from nest_integrations.langchain import ChatNest  # noqa: E402
from tests.langchain.conftest import shared_chat_engine  # noqa: E402


class _Flags:
    """What ChatNest can and cannot do, said honestly."""

    @property
    def chat_model_class(self) -> type[ChatNest]:
        return ChatNest

    @property
    def chat_model_params(self) -> dict:
        return {"engine": shared_chat_engine()}

    @property
    def standard_chat_model_params(self) -> dict:
        # the standard ones (temperature 0, timeout, stop, retries) with short answers to keep CI fast
        return {**super().standard_chat_model_params, "max_tokens": 16}

    @property
    def has_tool_calling(self) -> bool:
        return False  # a 135M NEST decoder has no tool calling

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestChatNestUnit(_Flags, ChatModelUnitTests):
    pass


class TestChatNestIntegration(_Flags, ChatModelIntegrationTests):
    pass


def test_no_standard_test_is_overridden() -> None:
    """Guard: our subclasses only set flags; every standard test runs as langchain-tests wrote it."""
    for ours, theirs in ((TestChatNestUnit, ChatModelUnitTests), (TestChatNestIntegration, ChatModelIntegrationTests)):
        for name in dir(theirs):
            if name.startswith("test_"):
                assert getattr(ours, name) is getattr(theirs, name), f"{ours.__name__}.{name} overrides a standard test"
