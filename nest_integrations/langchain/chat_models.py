"""``ChatNest``: a LangChain chat model that answers with NEST and cites the spans it copied.

Every copied span becomes a citation dict in ``AIMessage.response_metadata["citations"]`` (and, with
``output_version="v1"``, a LangChain ``citation`` annotation on the text block): the cited text, its
source (file path), document and chunk id, its character range in the source document and in the
response. Citations are exact by construction: ``document[start:end] == cited_text``.

``response_metadata`` also says what the answer is worth: ``sentences`` (a support label per
sentence), ``abstained`` / ``abstain_reason``, ``truncated``, ``finish_reason``, ``relevance``, and which passages the
(conversation-aware) retrieval query found (``retrieval_query``, ``passages``).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.documents import Document as LCDocument
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, SecretStr

from nest_integrations._async import call_in_thread, iterate_in_thread
from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError, NestError
from nest_integrations.prompts import conversation_retrieval_query
from nest_integrations.results import CopiedSpan, NestResult, answer_labels

__all__ = [
    "ChatNest",
    "RetrievalQueryMode",
    "UnsupportedMessageError",
    "citation_dict",
    "citations_to_documents",
    "to_nest_messages",
]

RetrievalQueryMode = Literal["condensed", "last_user", "all_user", "last_user_message", "all_user_messages"]
"""How ChatNest picks the retrieval query of a conversation (see :class:`ChatNest`)."""


class UnsupportedMessageError(NestError, ValueError):
    """A message ChatNest cannot take: tool messages, non-text content blocks, empty conversations."""


def citation_dict(span: CopiedSpan) -> dict[str, Any]:
    """The citation of one copied span (no ``index`` key, so streamed lists merge by concatenation)."""
    return {
        "cited_text": span.text,
        "source": span.source,
        "doc_id": span.doc_id,
        "chunk_id": span.chunk_id,
        "start": span.doc_start,
        "end": span.doc_end,
        "response_start": span.response_start,
        "response_end": span.response_end,
        "n_tokens": span.n_tokens,
    }


def _annotation(c: dict[str, Any]) -> dict[str, Any]:
    """A LangChain ``citation`` annotation (indices into the response; source offsets in ``extras``)."""
    ann: dict[str, Any] = {
        "type": "citation",
        "cited_text": c["cited_text"],
        "start_index": c["response_start"],
        "end_index": c["response_end"],
        "extras": {k: c[k] for k in ("doc_id", "chunk_id", "start", "end", "n_tokens")},
    }
    if c.get("source"):
        ann["title"] = str(c["source"])
    return ann


def citations_to_documents(message: BaseMessage) -> list[LCDocument]:
    """The cited spans of a ChatNest answer as LangChain ``Document`` s (for "answer + sources" chains).

    ``page_content`` is the copied text; metadata holds source, document / chunk id and the offsets
    in the source document and in the answer.
    """
    out = []
    for c in message.response_metadata.get("citations", []) or []:
        meta = {k: v for k, v in c.items() if k != "cited_text"}
        out.append(LCDocument(page_content=c["cited_text"], metadata=meta))
    return out


def _text_of(content: Any, role: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise UnsupportedMessageError(
                f"ChatNest takes text only; a {role} message has a {kind!r} content block"
            )
    return "".join(parts)


def to_nest_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages → role/content dicts for the model's chat template.

    Raises:
        UnsupportedMessageError: empty list, tool messages or tool calls, non-text content.
    """
    if not messages:
        raise UnsupportedMessageError("the message list is empty")
    out = []
    for m in messages:
        if isinstance(m, ToolMessage) or getattr(m, "tool_calls", None):
            raise UnsupportedMessageError("ChatNest has no tool calling: tool messages and tool calls are not supported")
        if isinstance(m, SystemMessage):
            role = "system"
        elif isinstance(m, HumanMessage):
            role = "user"
        elif isinstance(m, AIMessage):
            role = "assistant"
        elif isinstance(m, ChatMessage) and m.role in ("system", "user", "assistant"):
            role = m.role
        else:
            raise UnsupportedMessageError(f"unsupported message type {type(m).__name__}")
        out.append({"role": role, "content": _text_of(m.content, role)})
    if not any(m["role"] == "user" for m in out):
        raise UnsupportedMessageError("no user message to answer")
    return out


class ChatNest(BaseChatModel):
    """NEST as a LangChain chat model: answers from your documents, with engine-verified citations.

    Build it with :meth:`from_documents` (LangChain documents, any splitter), :meth:`from_datastore`
    (a saved :class:`~nest_integrations.datastore.Datastore`) or :meth:`from_retriever` (a LangChain
    retriever / vector store as the passage stage), or pass an ``engine``.

    **Drop-in (context mode)**: ``ChatNest()`` with no engine is the LLM of the RAG chain you already have
    (``create_stuff_documents_chain`` / ``create_retrieval_chain`` over any vector store): NEST copies from
    the context the chain put in the prompt — every system / user message of at least ``context_min_chars``
    characters (:mod:`nest_integrations.context`) — with no datastore. Citations then have ``doc_id``
    ``message-<i>`` and offsets into that message; :func:`~nest_integrations.langchain.invoke_with_citations`
    runs a chain and maps them to its ``context`` documents (and to the files they came from). The model is
    ``model`` (a path or cached id; default the embedded model), loaded once per process and shared.

    Retrieval runs per call on the text chosen by ``retrieval_query``:

    - ``"condensed"`` (what ``None``, the default, gives unless ``nest_config.conversation_query`` says
      otherwise): the last user message alone when it names its own subject; a follow-up that refers
      back ("Who was her father?": a referring word such as *her*, *it*, *they*, or no capitalised
      word after its first) is followed by the previous user turns, most recent first, so a two-turn
      conversation about Ada Lovelace retrieves the Lovelace document for the follow-up
      (:func:`~nest_integrations.prompts.condensed_query`; no model call);
    - ``"last_user"`` (alias ``"last_user_message"``): the last user message only;
    - ``"all_user"`` (alias ``"all_user_messages"``): every user message, in order.

    The query used is in ``response_metadata["retrieval_query"]``, the retrieved chunks in
    ``response_metadata["passages"]``. In a RAG chain whose prompt already holds retrieved context, the
    datastore is still your documents, and the last user message (context + question) is the query.
    In ``create_history_aware_retriever`` ChatNest writes the search text from the conversation like
    any chat model; NEST copies it from the passages the condensed query finds.

    Besides ``citations``, every answer's ``response_metadata`` (and the last streamed chunk's) holds
    ``sentences`` (one support label per sentence: ``copied`` / ``grounded`` / ``unsupported``, with
    its character range and chunk ids), ``abstained`` (NEST answered ``abstain_message`` because no
    retrieved passage is close enough to the question, or — with ``abstain="retrieval+support"`` — its
    first sentence would be unsupported: ``abstain_reason`` says which; there are then no citations), ``truncated``
    (cut by ``max_tokens``), ``finish_reason`` (``eos``, ``stop``, ``sentence``, ``length`` or
    ``abstained``) and ``relevance``.

    One ChatNest (or several over one engine) may serve many threads and asyncio tasks at once: the
    engine decides how requests share the model, and each returns what it returns alone. Cancelling an
    ``ainvoke`` / ``astream`` task, or leaving a stream early, stops decoding within one step.

    Decoding is greedy (NEST's mixture); ``temperature`` must be ``None`` or ``0``. ``max_tokens`` and
    ``stop`` map to the engine's ``max_new_tokens`` and ``stop``; ``nest_config`` holds the other
    hyperparameters (:class:`~nest_integrations.config.NestConfig`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    engine: Any = Field(default=None, exclude=True, description="the NestEngine that answers (None: context mode)")
    lm: Any = Field(default=None, exclude=True, description="context mode's model (default: the embedded one, shared)")
    context_min_chars: int = Field(
        default=200, description="context mode: a system / user message this long (characters) holds context"
    )
    model: str = Field(default="", alias="model_name", description="model id (from the engine when empty)")
    nest_config: NestConfig | None = Field(default=None, description="NEST hyperparameters (default: the engine's)")
    method: Literal["nest", "ra-nest", "knnlm", "ra", "base"] | None = None
    retrieval_query: RetrievalQueryMode | None = Field(
        default=None,
        description="condensed | last_user | all_user (aliases last_user_message, all_user_messages); "
        "None = the config's conversation_query (default condensed)",
    )
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    timeout: float | None = None
    max_retries: int | None = None
    api_key: SecretStr | None = None
    streaming: bool = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._check()  # after pydantic: raises ConfigError itself (a validator's error would be re-wrapped)

    def _check(self) -> None:
        if self.temperature not in (None, 0, 0.0):
            raise ConfigError(
                "ChatNest decodes greedily from the NEST mixture: temperature must be None or 0 "
                f"(got {self.temperature}); the mixture's internal temperature is nest_config.lm_temperature"
            )
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ConfigError(f"max_tokens must be positive (got {self.max_tokens})")
        _check_stop(self.stop)
        if self.context_min_chars < 1:
            raise ConfigError(f"context_min_chars must be positive (got {self.context_min_chars})")
        if self.engine is None:
            # context mode: no datastore; NEST copies from the context the caller's chain put in the prompt
            if self.lm is None:
                from nest_integrations.models import shared_model

                self.lm = shared_model(self.model or None)
        elif self.lm is None:
            self.lm = self.engine.lm
        if not self.model:
            self.model = self.lm.model_id

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_documents(
        cls,
        documents: Sequence[LCDocument],
        *,
        text_splitter: Any = None,
        model: Any = None,
        dtype: str = "auto",
        nest_config: NestConfig | None = None,
        **kwargs: Any,
    ) -> ChatNest:
        """Build from LangChain documents (any loader), split with ``text_splitter``.

        Default splitter: ``RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=100,
        add_start_index=True)``. ``model``: a :class:`~nest_integrations.models.LoadedModel`, a local
        path or cached Hugging Face id (default: the embedded model). Token keys are computed now.
        Other keyword arguments are ChatNest fields (``max_tokens``, ``method``, ...).
        """
        from nest_integrations.datastore import Datastore
        from nest_integrations.langchain.documents import chunks_from_langchain

        lm = _as_lm(model, dtype)
        docs, chunks, problems = chunks_from_langchain(documents, text_splitter=text_splitter)
        if problems:
            import warnings

            warnings.warn(f"{len(problems)} piece(s) not indexed: {problems[0]}", stacklevel=2)
        store = Datastore.build(lm, chunks, documents=docs, progress=False)
        cfg = nest_config or NestConfig()
        return cls(engine=store.engine(cfg), nest_config=cfg, **kwargs)

    @classmethod
    def from_datastore(
        cls, datastore: Any, *, model: Any = None, nest_config: NestConfig | None = None, **kwargs: Any
    ) -> ChatNest:
        """Build from a :class:`~nest_integrations.datastore.Datastore` or the path of a saved one."""
        from nest_integrations.datastore import Datastore

        if not isinstance(datastore, Datastore):
            dtype = Datastore.stored_dtype(datastore) or "auto"
            datastore = Datastore.load(datastore, _as_lm(model, dtype))
        cfg = nest_config or NestConfig(key_layer=datastore.key_layer)
        return cls(engine=datastore.engine(cfg), nest_config=cfg, **kwargs)

    @classmethod
    def from_retriever(
        cls,
        retriever: Any,
        datastore: Any,
        *,
        nest_config: NestConfig | None = None,
        **kwargs: Any,
    ) -> ChatNest:
        """Use a LangChain retriever / vector store as the passage stage over ``datastore``'s chunks.

        Retrieved documents are matched to datastore chunks by id (index the chunks with
        :func:`~nest_integrations.langchain.documents.chunks_to_langchain` for exact matches), then by
        source + ``start_index``, then by text.
        """
        from nest_integrations.langchain.documents import LangChainPassageRetriever

        cfg = nest_config or NestConfig(key_layer=datastore.key_layer)
        adapter = LangChainPassageRetriever(retriever, datastore.chunks)
        return cls(engine=datastore.engine(cfg, retriever=adapter), nest_config=cfg, **kwargs)

    # ---- LangChain plumbing -----------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "nest"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        cfg = self._config()
        return {"model": self.model, "method": cfg.method, "config": cfg.model_dump(mode="json")}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "nest"
        params["ls_model_name"] = kwargs.get("model") or self.model
        params["ls_model_type"] = "chat"
        params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _config(self) -> NestConfig:
        if self.nest_config is not None:
            return self.nest_config
        return self.engine.config if self.engine is not None else NestConfig()

    def _run(self, msgs: list[dict[str, str]], query: str, cancel: threading.Event | None, opts: dict[str, Any]):
        """The engine's stream of deltas, or context mode's when ChatNest has no engine."""
        if self.engine is not None:
            return self.engine.stream(msgs, retrieval_query=query, cancel=cancel, **opts)
        from nest_integrations.context import stream_over_context

        return stream_over_context(
            self.lm, msgs, self._config(), min_chars=self.context_min_chars, retrieval_query=query, cancel=cancel, **opts
        )

    def _call_options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        _check_stop(stop)
        opts: dict[str, Any] = {}
        max_tokens = kwargs.pop("max_tokens", None) or self.max_tokens
        if max_tokens is not None:
            opts["max_new_tokens"] = int(max_tokens)
        stops = list(self.stop or []) + list(stop or [])
        if stops:
            opts["stop"] = stops
        if self.method is not None:
            opts["method"] = self.method
        if self.nest_config is not None:
            base = self.nest_config.model_dump()
            base.update(opts)
            opts = base
        unknown = sorted(set(kwargs) - {"run_manager"})
        cfg_fields = set(NestConfig.model_fields)
        for k in unknown:
            if k in cfg_fields:
                opts[k] = kwargs[k]
        return opts

    def _query(self, msgs: list[dict[str, str]], opts: dict[str, Any]) -> str:
        """The retrieval query of ``msgs`` (see the class docs); ``opts`` are this call's config overrides."""
        default = opts.get("conversation_query") or self._config().conversation_query
        return conversation_retrieval_query(msgs, self.retrieval_query, default)

    def _metadata(self, result: NestResult, query: str) -> dict[str, Any]:
        return {
            "model_name": self.model,
            **answer_labels(result),
            "retrieval_query": query,
            "nest_stats": result.stats.to_dict(),
            "passages": [p.__dict__ for p in result.passages],
        }

    def _usage(self, result: NestResult) -> UsageMetadata:
        n_in = int(result.stats.prompt_tokens)
        n_out = int(result.stats.output_tokens)
        return UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)

    def _v1(self) -> bool:
        return getattr(self, "output_version", None) == "v1"

    # ---- generation -------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._answer(messages, stop, kwargs, None)

    def _answer(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        cancel: threading.Event | None,
    ) -> ChatResult:
        msgs = to_nest_messages(messages)
        opts = self._call_options(stop, kwargs)
        query = self._query(msgs, opts)
        result = None
        for delta in self._run(msgs, query, cancel, opts):
            result = delta.result or result
        assert result is not None
        citations = [] if result.abstained else [citation_dict(s) for s in result.spans]
        content: Any = result.text
        if self._v1():
            content = [{"type": "text", "text": result.text, "annotations": [_annotation(c) for c in citations]}]
        msg = AIMessage(
            content=content,
            response_metadata={"citations": citations, **self._metadata(result, query)},
            usage_metadata=self._usage(result),
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs, None):
            if run_manager and chunk.message.text:
                run_manager.on_llm_new_token(chunk.message.text, chunk=chunk)
            yield chunk

    def _chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        cancel: threading.Event | None,
    ) -> Iterator[ChatGenerationChunk]:
        """The streamed chunks; no lock is held while one is yielded (the engine releases the model first)."""
        msgs = to_nest_messages(messages)
        opts = self._call_options(stop, kwargs)
        query = self._query(msgs, opts)
        for delta in self._run(msgs, query, cancel, opts):
            chunk = self._chunk(delta, query)
            if chunk is not None:
                yield chunk

    def _chunk(self, delta: Any, query: str) -> ChatGenerationChunk | None:
        citations = [citation_dict(s) for s in delta.spans]
        if delta.result is not None and delta.result.abstained:
            citations = []
        meta: dict[str, Any] = {"citations": citations} if citations else {}
        usage = None
        if delta.result is not None:
            meta.update(self._metadata(delta.result, query))
            meta.setdefault("citations", [])
            usage = self._usage(delta.result)
        if not delta.text and not meta and usage is None:
            return None
        content: Any = delta.text
        if self._v1():
            content = [{"type": "text", "text": delta.text, "index": 0, "annotations": [_annotation(c) for c in citations]}]
        msg = AIMessageChunk(content=content, response_metadata=meta, usage_metadata=usage)
        if delta.result is not None:
            msg.chunk_position = "last"
        return ChatGenerationChunk(message=msg)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await call_in_thread(lambda cancel: self._answer(messages, stop, kwargs, cancel))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for item in iterate_in_thread(lambda cancel: self._chunks(messages, stop, kwargs, cancel)):
            if run_manager and item.message.text:
                await run_manager.on_llm_new_token(item.message.text, chunk=item)
            yield item


def _check_stop(stop: Sequence[str] | None) -> None:
    if stop is None:
        return
    if isinstance(stop, str):
        raise ConfigError("stop must be a list of strings, not a string")
    if any(not isinstance(s, str) or s == "" for s in stop):
        raise ConfigError("stop sequences must be non-empty strings (an empty string would stop before any text)")


def _as_lm(model: Any, dtype: str) -> Any:
    from nest_integrations.models import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    return load_model(model, dtype=dtype)  # type: ignore[arg-type]
