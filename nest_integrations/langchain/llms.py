"""``NestLLM``: NEST as a LangChain completion-style LLM (text in, text out, citations in generation_info)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict, Field

from nest_integrations._async import call_in_thread, iterate_in_thread
from nest_integrations.config import NestConfig
from nest_integrations.context import prompt_question
from nest_integrations.errors import ConfigError, EmptyQuestionError
from nest_integrations.langchain.chat_models import _check_stop, citation_dict
from nest_integrations.results import NestResult, answer_labels

__all__ = ["NestLLM", "prompt_question"]


class NestLLM(LLM):
    """NEST for completion-style chains: ``invoke(text) -> str``; use ``generate`` for the citations.

    The prompt is fed raw (``raw=True``: no chat template) unless ``chat_template=True``, and it is
    also the retrieval query (or ``retrieval_query`` when set). Each generation's ``generation_info``
    holds ``citations`` (see :func:`~nest_integrations.langchain.chat_models.citation_dict`),
    ``sentences`` (one support label per sentence: copied / grounded / unsupported), ``abstained``,
    ``abstain_reason``,
    ``truncated``, ``finish_reason``, ``relevance`` and ``nest_stats``; streamed chunks carry the
    citations as they complete and the last one the rest, so the merged stream equals ``generate``.
    Raw completion prompts are continued, not answered: the stop policy and abstention apply with
    ``chat_template=True`` only. Streaming fires ``on_llm_new_token`` per text delta.

    With no engine, ``NestLLM()`` is **context mode** (:mod:`nest_integrations.context`), the drop-in LLM of a
    completion-style RAG chain: the prompt (with the chat template, as one user message) is answered by NEST
    copying from the context in it — the whole prompt when it has at least ``context_min_chars`` characters —
    with citations into the prompt (``doc_id`` ``message-0``; :func:`~nest_integrations.langchain.invoke_with_citations`
    maps them to a chain's documents). Its question (for the answer proposer and abstention) is
    ``retrieval_query``, else the prompt's last ``Question:`` / ``Query:`` line, else its last line. ``lm`` is the
    model (default: the embedded one, shared).

    Safe to share between threads and asyncio tasks (the engine decides how requests share the model);
    cancelling an async call or leaving a stream early stops decoding within one step.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(default=None, exclude=True)
    lm: Any = Field(default=None, exclude=True, description="context mode's model (default: the embedded one, shared)")
    context_min_chars: int = 200
    model: str = ""
    nest_config: NestConfig | None = None
    chat_template: bool = False
    retrieval_query: str | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_stop(self.stop)
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be positive (got {self.max_tokens})")
        if self.context_min_chars < 1:
            raise ConfigError(f"context_min_chars must be positive (got {self.context_min_chars})")
        if self.engine is None:  # context mode
            if self.lm is None:
                from nest_integrations.models import shared_model

                self.lm = shared_model()
        elif self.lm is None:
            self.lm = self.engine.lm
        if not self.model:
            self.model = self.lm.model_id

    @property
    def _llm_type(self) -> str:
        return "nest"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        cfg = self.nest_config or (self.engine.config if self.engine is not None else NestConfig())
        return {"model": self.model, "config": cfg.model_dump(mode="json")}

    def _opts(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        _check_stop(stop)
        opts: dict[str, Any] = dict(self.nest_config.model_dump()) if self.nest_config else {}
        max_tokens = kwargs.get("max_tokens") or self.max_tokens
        if max_tokens:
            opts["max_new_tokens"] = int(max_tokens)
        stops = list(self.stop or []) + list(stop or [])
        if stops:
            opts["stop"] = stops
        return opts

    def _run(
        self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> Iterator[Any]:
        if not prompt.strip():
            raise EmptyQuestionError("the prompt is empty")
        if self.engine is None:
            from nest_integrations.context import stream_over_context

            return stream_over_context(
                self.lm,
                prompt,
                self.nest_config or NestConfig(),
                min_chars=self.context_min_chars,
                retrieval_query=self.retrieval_query or prompt_question(prompt),
                cancel=cancel,
                **self._opts(stop, kwargs),
            )
        return self.engine.stream(
            prompt,
            raw=not self.chat_template,
            retrieval_query=self.retrieval_query or prompt,
            cancel=cancel,
            **self._opts(stop, kwargs),
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return self._generate_all(prompts, stop, run_manager, kwargs, None)

    def _generate_all(
        self,
        prompts: list[str],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        cancel: threading.Event | None,
    ) -> LLMResult:
        gens = []
        for prompt in prompts:
            result = None
            for delta in self._run(prompt, stop, kwargs, cancel):
                if delta.text and run_manager:
                    run_manager.on_llm_new_token(delta.text)
                result = delta.result or result
            assert result is not None
            info = {"citations": [] if result.abstained else [citation_dict(s) for s in result.spans], **_info(result)}
            gens.append([Generation(text=result.text, generation_info=info)])
        return LLMResult(generations=gens, llm_output={"model_name": self.model})

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self._generate([prompt], stop, run_manager, **kwargs).generations[0][0].text

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        for chunk in self._chunks(prompt, stop, kwargs, None):
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _chunks(
        self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any], cancel: threading.Event | None
    ) -> Iterator[GenerationChunk]:
        for delta in self._run(prompt, stop, kwargs, cancel):
            spans = [] if delta.result is not None and delta.result.abstained else delta.spans
            info: dict[str, Any] = {"citations": [citation_dict(s) for s in spans]} if spans else {}
            if delta.result is not None:
                info.update(_info(delta.result))
                info.setdefault("citations", [])
            if not delta.text and not info:
                continue
            yield GenerationChunk(text=delta.text, generation_info=info or None)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for chunk in iterate_in_thread(lambda cancel: self._chunks(prompt, stop, kwargs, cancel)):
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return await call_in_thread(lambda cancel: self._generate_all(prompts, stop, None, kwargs, cancel))


def _info(result: NestResult) -> dict[str, Any]:
    """``generation_info`` of a finished answer, citations aside."""
    return {**answer_labels(result), "nest_stats": result.stats.to_dict()}
