"""``NestLLM``: NEST as a LlamaIndex LLM (``Settings.llm = NestLLM(...)``), citations in ``additional_kwargs``."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from nest_integrations._async import call_in_thread, iterate_in_thread
from nest_integrations.chunks import Chunk
from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError, EmptyQuestionError
from nest_integrations.prompts import conversation_retrieval_query
from nest_integrations.results import answer_labels
from nest_integrations.retrieval.base import ScoredChunk, clamp_k

__all__ = ["NestLLM", "PromptChunksRetriever", "citation_dict", "parse_condense_prompt"]


def citation_dict(span: Any) -> dict[str, Any]:
    """One copied span as a plain dict (source, ids, offsets in the document and in the response)."""
    return {
        "cited_text": span.text,
        "source": span.source,
        "doc_id": span.doc_id,
        "chunk_id": span.chunk_id,
        "start_char_idx": span.doc_start,
        "end_char_idx": span.doc_end,
        "response_start": span.response_start,
        "response_end": span.response_end,
        "n_tokens": span.n_tokens,
    }


class PromptChunksRetriever:
    """Passage stage for an LLM inside a LlamaIndex synthesizer: the chunks whose text is in the prompt.

    The synthesizer puts retrieved node texts into the prompt; those chunks (in prompt order, at most
    ``k``) become the request's token store. When the prompt holds none, ``fallback`` (e.g. the
    built-in hybrid retriever over the same chunks) picks the top-``k`` for the query.
    """

    def __init__(self, chunks: Sequence[Chunk], fallback: Any) -> None:
        self.chunks = chunks
        self.fallback = fallback

    def __len__(self) -> int:
        return len(self.chunks)

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        found = []
        for i, c in enumerate(self.chunks):
            pos = query.find(c.text)
            if pos >= 0:
                found.append((pos, i))
        if found:
            found.sort()
            return [ScoredChunk(i, 1.0) for _, i in found[: clamp_k(k, len(self.chunks))]]
        return self.fallback.retrieve(query, k)


class NestLLM(CustomLLM):
    """NEST for LlamaIndex: ``complete`` / ``stream_complete`` / ``chat`` / async, over a NEST engine.

    Copied spans are in ``CompletionResponse.additional_kwargs["citations"]`` (and ``ChatResponse``'s),
    next to ``sentences`` (one support label per sentence: copied / grounded / unsupported, with its
    character range and chunk ids), ``abstained`` (the answer is ``abstain_message``: no retrieved
    passage is close enough to the question; no citations then; ``abstain_reason`` says why), ``truncated``, ``finish_reason``,
    ``relevance``, ``passages`` (the retrieved chunks: ``chunk_id``, ``doc_id``, ``score``), ``nest_stats``
    and, for chat calls, ``retrieval_query``. In a stream the last response has them all.
    Completion prompts are fed as chat (the model's chat template, one user message) unless
    ``raw_completion=True``; their retrieval query is the prompt itself.

    ``chat`` / ``stream_chat`` / ``achat`` / ``astream_chat`` hand the whole conversation to the engine
    and retrieve with a conversation-aware query, chosen by ``conversation_query``: ``condensed``
    (what ``None``, the default, gives unless ``nest_config.conversation_query`` says otherwise) is the
    last user message alone when it names its subject, and a follow-up that refers back ("Who was her
    father?": a referring word, or no capitalised word after its first) followed by the previous user
    turns (:func:`~nest_integrations.prompts.condensed_query`, no model call); ``last_user`` and
    ``all_user`` take the last or every user message.

    Chat engines (``index.as_chat_engine()``, i.e. ``CondensePlusContextChatEngine``, and
    ``CondenseQuestionChatEngine``) first ask the LLM, with a completion prompt, to rewrite a follow-up
    as a standalone question. With ``condense_questions=True`` (default) NestLLM recognises those
    prompts (LlamaIndex's default condense templates and any in ``condense_templates``) and answers
    with the same condensed query it retrieves with, built from the prompt's chat history and follow-up
    without decoding (``additional_kwargs["condensed_question"]`` is then True): a small NEST decoder
    asked to rewrite a question copies an answer instead, or abstains, and the chat engine would
    retrieve with that. Set it False to have such prompts decoded like any other.

    Build it with ``NestLLM(engine=...)``, or :meth:`from_index` to make an index's nodes the datastore
    (then, per call, the token store holds the nodes the synthesizer put into the prompt).

    Safe to share between threads and asyncio tasks: the engine decides how requests share the model.
    Cancelling an async call, or leaving ``astream_chat`` / ``astream_complete`` early, stops decoding
    within one step.
    """

    model_name: str = Field(default="", description="model id (from the engine when empty)")
    max_new_tokens: int | None = Field(default=None, description="tokens per answer (default: the engine config)")
    raw_completion: bool = False
    nest_config: NestConfig | None = None
    conversation_query: Literal["condensed", "last_user", "all_user"] | None = Field(
        default=None,
        description="retrieval query of chat calls: condensed | last_user | all_user "
        "(None = the config's conversation_query, default condensed)",
    )
    condense_questions: bool = Field(
        default=True,
        description="answer chat engines' condense-question prompts with the condensed query (no decoding)",
    )
    condense_templates: list[str] = Field(
        default_factory=list,
        description="more condense-question templates (with {chat_history} and {question}) to recognise",
    )

    _engine: Any = PrivateAttr()

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if engine is None:
            raise ConfigError("NestLLM needs an engine: NestLLM(engine=...), NestLLM.from_index(index) or from a datastore")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be positive (got {self.max_new_tokens})")
        self._engine = engine
        if not self.model_name:
            self.model_name = engine.lm.model_id

    @classmethod
    def class_name(cls) -> str:
        return "NestLLM"

    @property
    def engine(self) -> Any:
        """The :class:`~nest_integrations.engine.NestEngine` behind this LLM."""
        return self._engine

    @classmethod
    def from_index(
        cls,
        index: Any,
        *,
        model: Any = None,
        documents: Sequence[Any] | None = None,
        nest_config: NestConfig | None = None,
        **kwargs: Any,
    ) -> NestLLM:
        """An LLM whose datastore is the nodes of ``index`` (e.g. a ``VectorStoreIndex``).

        ``documents`` (the LlamaIndex documents the index was built from) let every node offset be
        verified against its document text; without them, node offsets are used when they are
        consistent with the node text, else the node itself is the cited document.
        """
        store = datastore_from_index(index, model, documents)
        cfg = nest_config or NestConfig(method="ra-nest")
        retriever = PromptChunksRetriever(store.chunks, store.passage_retriever(cfg.retriever))
        # the synthesizer already put the context into the prompt: decode it with NEST over those nodes
        cfg = cfg.replace(method="nest") if cfg.method == "ra-nest" else cfg
        return cls(engine=store.engine(cfg, retriever=retriever), nest_config=cfg, **kwargs)

    @property
    def metadata(self) -> LLMMetadata:
        cfg = self.nest_config or self._engine.config
        return LLMMetadata(
            context_window=int(self._engine.lm.context_window),
            num_output=int(self.max_new_tokens or cfg.max_new_tokens),
            model_name=self.model_name,
            is_chat_model=False,
        )

    # ---- helpers --------------------------------------------------------------------------------
    def _opts(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        opts: dict[str, Any] = dict(self.nest_config.model_dump()) if self.nest_config else {}
        n = kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.max_new_tokens
        if n:
            opts["max_new_tokens"] = int(n)
        return opts

    def _stream(
        self, prompt: Any, query: str, raw: bool, kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> Any:
        if not query.strip():
            raise EmptyQuestionError("the prompt is empty")
        return self._engine.stream(prompt, raw=raw, retrieval_query=query, cancel=cancel, **self._opts(kwargs))

    def _condensed(self, prompt: str) -> CompletionResponse | None:
        """The answer to a chat engine's condense-question prompt, or None for any other prompt."""
        if not self.condense_questions:
            return None
        messages = parse_condense_prompt(prompt, self.condense_templates)
        if messages is None:
            return None
        cfg = self.nest_config or self._engine.config
        query = conversation_retrieval_query(messages, self.conversation_query, cfg.conversation_query)
        extra = {
            "condensed_question": True,
            "retrieval_query": query,
            "citations": [],
            "sentences": [],
            "abstained": False,
            "abstain_reason": None,
            "truncated": False,
            "finish_reason": "condensed",
            "relevance": None,
        }
        return CompletionResponse(text=query, delta=query, additional_kwargs=extra)

    def _complete_sync(
        self, prompt: str, kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> CompletionResponse:
        condensed = self._condensed(prompt)
        if condensed is not None:
            return condensed
        result = None
        for d in self._stream(prompt, prompt, self.raw_completion, kwargs, cancel):
            result = d.result or result
        assert result is not None
        return CompletionResponse(text=result.text, additional_kwargs=_extra(result))

    def _stream_sync(
        self, prompt: str, kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> CompletionResponseGen:
        condensed = self._condensed(prompt)
        if condensed is not None:
            yield condensed
            return
        text = ""
        for d in self._stream(prompt, prompt, self.raw_completion, kwargs, cancel):
            text += d.text
            extra: dict[str, Any] = {"citations": [citation_dict(s) for s in d.spans]}
            if d.result is not None:
                extra = _extra(d.result)
            if d.text or d.result is not None or d.spans:
                yield CompletionResponse(text=text, delta=d.text, additional_kwargs=extra)

    # ---- completion -----------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete_sync(prompt, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self._stream_sync(prompt, kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await call_in_thread(lambda cancel: self._complete_sync(prompt, kwargs, cancel))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        return iterate_in_thread(lambda cancel: self._stream_sync(prompt, kwargs, cancel))

    # ---- chat (the model's chat template) ---------------------------------------------------------
    def _messages(self, messages: Sequence[ChatMessage]) -> tuple[list[dict[str, str]], str]:
        """Role/content dicts of ``messages`` and their retrieval query (see the class docs)."""
        out = []
        for m in messages:
            role = {MessageRole.SYSTEM: "system", MessageRole.USER: "user", MessageRole.ASSISTANT: "assistant"}.get(
                m.role
            )
            if role is None:
                raise ConfigError(f"NestLLM cannot take {m.role.value!r} messages (no tool calling)")
            out.append({"role": role, "content": m.content or ""})
        if not any(m["role"] == "user" for m in out):
            raise EmptyQuestionError("no user message to answer")
        cfg = self.nest_config or self._engine.config
        return out, conversation_retrieval_query(out, self.conversation_query, cfg.conversation_query)

    def _chat_sync(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> ChatResponse:
        msgs, query = self._messages(messages)
        result = None
        for d in self._stream(msgs, query, False, kwargs, cancel):
            result = d.result or result
        assert result is not None
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text),
            additional_kwargs=_extra(result, query),
        )

    def _stream_chat_sync(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> ChatResponseGen:
        msgs, query = self._messages(messages)
        text = ""
        for d in self._stream(msgs, query, False, kwargs, cancel):
            text += d.text
            if d.result is not None:
                extra = _extra(d.result, query)
            else:
                extra = {"citations": [citation_dict(s) for s in d.spans]}
            yield ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=d.text, additional_kwargs=extra
            )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_sync(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream_chat_sync(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await call_in_thread(lambda cancel: self._chat_sync(messages, kwargs, cancel))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return iterate_in_thread(lambda cancel: self._stream_chat_sync(messages, kwargs, cancel))


def _default_condense_templates() -> list[str]:
    """LlamaIndex's own condense-question templates (those of the installed version that exist)."""
    out = []
    try:
        from llama_index.core.chat_engine import condense_plus_context

        out.append(condense_plus_context.DEFAULT_CONDENSE_PROMPT_TEMPLATE)
    except (ImportError, AttributeError):  # pragma: no cover - other llama-index versions
        pass
    try:
        from llama_index.core.chat_engine import condense_question

        out.append(condense_question.DEFAULT_TEMPLATE)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return out


_ROLE_LINE = re.compile(r"^(user|assistant|system|developer|chatbot|model|function|tool): ?", re.MULTILINE)


def _template_regex(template: str) -> re.Pattern[str] | None:
    """A regex matching ``template`` formatted with any ``chat_history`` and ``question`` (None without both)."""
    if "{chat_history}" not in template or "{question}" not in template:
        return None
    pattern = re.escape(template.strip())
    pattern = pattern.replace(re.escape("{chat_history}"), "(?P<chat_history>.*)", 1)
    pattern = pattern.replace(re.escape("{question}"), "(?P<question>.*?)", 1)
    return re.compile(pattern + r"\s*$", re.DOTALL)


def parse_condense_prompt(prompt: str, extra_templates: Sequence[str] = ()) -> list[dict[str, str]] | None:
    """The conversation inside a chat engine's condense-question prompt, or None if ``prompt`` is not one.

    The prompt must be one of LlamaIndex's default condense templates (``CondensePlusContextChatEngine``,
    ``CondenseQuestionChatEngine``) or of ``extra_templates``, formatted with a chat history in
    LlamaIndex's ``messages_to_history_str`` form ("role: content" lines) and the follow-up question.
    Returns the history's messages followed by ``{"role": "user", "content": follow-up}``.
    """
    for template in [*extra_templates, *_default_condense_templates()]:
        regex = _template_regex(template)
        m = regex.search(prompt) if regex is not None else None
        if m is None:
            continue
        question = m.group("question").strip()
        if not question:
            return None
        history = m.group("chat_history")
        messages: list[dict[str, str]] = []
        marks = list(_ROLE_LINE.finditer(history))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(history)
            role = mark.group(1)
            role = role if role in ("user", "system") else "assistant"
            messages.append({"role": role, "content": history[mark.end() : end].strip()})
        messages.append({"role": "user", "content": question})
        return messages
    return None


def _extra(result: Any, query: str | None = None) -> dict[str, Any]:
    """``additional_kwargs`` of a finished answer: all its citations, support labels and statistics.

    ``query``: the retrieval query of a chat call (a completion's is its prompt, not repeated here).
    """
    extra: dict[str, Any] = {
        "citations": [] if result.abstained else [citation_dict(s) for s in result.spans],
        **answer_labels(result),
    }
    if query is not None:
        extra["retrieval_query"] = query
    extra["passages"] = [p.__dict__ for p in result.passages]
    extra["nest_stats"] = result.stats.to_dict()
    return extra


def datastore_from_index(index: Any, model: Any = None, documents: Sequence[Any] | None = None) -> Any:
    """A :class:`~nest_integrations.datastore.Datastore` of the nodes in ``index``'s docstore.

    With ``documents`` (what the index was built from) every node offset is verified against its
    document; without, node offsets are used when consistent with the node text, else the node is its
    own cited document.

    Raises:
        EmptyCorpusError: the index holds no node.
    """
    from nest_integrations.datastore import Datastore
    from nest_integrations.errors import EmptyCorpusError
    from nest_integrations.llama_index.documents import chunks_from_llama_index
    from nest_integrations.models import LoadedModel, load_model

    nodes = list(index.docstore.docs.values())
    if not nodes:
        raise EmptyCorpusError("the index holds no nodes: insert documents before building a query engine")
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    if documents is not None:
        docs, chunks, _ = chunks_from_llama_index(documents, nodes)
    else:
        docs, chunks = [], [_chunk_of_node(n) for n in nodes]
    return Datastore.build(lm, chunks, documents=docs, progress=False)


def _chunk_of_node(node: Any) -> Chunk:
    from llama_index.core.schema import MetadataMode

    text = node.get_content(metadata_mode=MetadataMode.NONE)
    meta = dict(node.metadata)
    if "source" not in meta and meta.get("file_path"):
        meta["source"] = str(meta["file_path"])
    s, e, ref = node.start_char_idx, node.end_char_idx, node.ref_doc_id
    if ref is not None and s is not None and e is not None and e - s == len(text):
        return Chunk(text, node.node_id, ref, int(s), meta)
    # offsets unknown or inconsistent: the node is its own document, so citations stay exact
    meta["offsets_relative_to"] = "node"
    return Chunk(text, node.node_id, node.node_id, 0, meta)
