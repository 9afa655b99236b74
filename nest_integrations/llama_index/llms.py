"""``NestLLM``: NEST as a LlamaIndex LLM (``Settings.llm = NestLLM(...)``), citations in ``additional_kwargs``."""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
from collections.abc import Iterator, Sequence
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

__all__ = [
    "NestLLM",
    "PromptChunksRetriever",
    "aquery_with_citations",
    "citation_dict",
    "cite_response",
    "collect_calls",
    "parse_condense_prompt",
    "query_with_citations",
    "template_context_segments",
    "template_query",
]


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
    (then, per call, the token store holds the nodes the synthesizer put into the prompt), or with no engine:
    ``Settings.llm = NestLLM()`` is **context mode** (:mod:`nest_integrations.context`) — NEST copies from the
    context the synthesizer put into the prompt (the block between LlamaIndex's ``-----`` rules, else every
    message of at least ``context_min_chars`` characters), with no datastore; its citations point into the
    prompt (``doc_id`` ``message-<i>``), and :func:`~nest_integrations.llama_index.query_with_citations` maps them
    to the response's nodes and their documents. ``lm`` is the model (default: the embedded one, shared).

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

    lm: Any = Field(default=None, exclude=True, description="context mode's model (default: the embedded one, shared)")
    context_min_chars: int = Field(
        default=200, description="context mode without template rules: messages this long are context"
    )

    _engine: Any = PrivateAttr()

    def __init__(self, engine: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be positive (got {self.max_new_tokens})")
        if self.context_min_chars < 1:
            raise ConfigError(f"context_min_chars must be positive (got {self.context_min_chars})")
        self._engine = engine
        if engine is None:  # context mode: the documents are the ones in the prompt
            if self.lm is None:
                from nest_integrations.models import shared_model

                self.lm = shared_model()
        elif self.lm is None:
            self.lm = engine.lm
        if not self.model_name:
            self.model_name = self.lm.model_id

    @classmethod
    def class_name(cls) -> str:
        return "NestLLM"

    @property
    def engine(self) -> Any:
        """The :class:`~nest_integrations.engine.NestEngine` behind this LLM (None in context mode)."""
        return self._engine

    def _cfg(self) -> NestConfig:
        if self.nest_config is not None:
            return self.nest_config
        return self._engine.config if self._engine is not None else NestConfig()

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
        cfg = self._cfg()
        return LLMMetadata(
            context_window=int(self.lm.context_window),
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
        collector = _COLLECTOR.get()
        if self._engine is not None:
            gen = self._engine.stream(prompt, raw=raw, retrieval_query=query, cancel=cancel, **self._opts(kwargs))
            yield from gen
            return
        from nest_integrations.context import stream_over_context
        from nest_integrations.prompts import to_messages

        msgs = to_messages(prompt)
        segments = template_context_segments(msgs, self.context_min_chars)
        question = template_query(msgs) or query
        for d in stream_over_context(
            self.lm, msgs, self._cfg(), segments=segments, retrieval_query=question, cancel=cancel, **self._opts(kwargs)
        ):
            if d.result is not None and collector is not None:
                collector.append({"messages": msgs, "result": d.result})
            yield d

    def _condensed(self, prompt: str) -> CompletionResponse | None:
        """The answer to a chat engine's condense-question prompt, or None for any other prompt."""
        if not self.condense_questions:
            return None
        messages = parse_condense_prompt(prompt, self.condense_templates)
        if messages is None:
            return None
        cfg = self._cfg()
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
        cfg = self._cfg()
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


# ---- context mode ------------------------------------------------------------------------------------------
_COLLECTOR: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("nest_li_calls", default=None)


def template_context_segments(messages: Sequence[dict[str, str]], min_chars: int = 200) -> list[Any]:
    """Context segments of a prompt from a LlamaIndex synthesizer: the engine's
    :func:`~nest_integrations.context.find_context_segments` (the text between the two rules of dashes of
    LlamaIndex's QA, refine and summarize templates, and a refine prompt's existing answer; else every message
    of at least ``min_chars`` characters)."""
    from nest_integrations.context import find_context_segments

    return find_context_segments(list(messages), None, min_chars)


def template_query(messages: Sequence[dict[str, str]]) -> str | None:
    """The query of a LlamaIndex QA / refine prompt (``Query: ...``), or None when it has no such line."""
    from nest_integrations.context import find_question
    from nest_integrations.prompts import last_user_text

    if not any(m["role"] == "user" for m in messages):
        return None
    q = find_question(list(messages))
    return None if q == last_user_text(list(messages)) else q


@contextlib.contextmanager
def collect_calls() -> Iterator[list[dict[str, Any]]]:
    """Within the block, every context-mode answer of a NestLLM (in this context, including worker threads
    started with it copied) is appended to the yielded list as ``{"messages", "result"}``."""
    calls: list[dict[str, Any]] = []
    token = _COLLECTOR.set(calls)
    try:
        yield calls
    finally:
        _COLLECTOR.reset(token)


def _node_documents(source_nodes: Sequence[Any]) -> list[tuple[str, dict[str, Any]]]:
    from llama_index.core.schema import MetadataMode

    out = []
    for nws in source_nodes:
        node = getattr(nws, "node", nws)
        meta: dict[str, Any] = {}
        path = node.metadata.get("file_path") or node.metadata.get("source")
        if path:
            meta["source"] = str(path)
        if node.start_char_idx is not None:
            meta["start_index"] = int(node.start_char_idx)
        out.append((node.get_content(metadata_mode=MetadataMode.NONE), meta))
    return out


def cite_response(response: Any, calls: Sequence[dict[str, Any]]) -> Any:
    """Put the copied spans of the answer into ``response``: ``metadata["citations"]`` (node, document offsets,
    file offsets where they verify) and ``source_nodes`` = the copied spans as nodes (related to the node and
    document they come from); the retrieved nodes move to ``metadata["retrieved_nodes"]``.

    The answer is the last call whose text is the response's (refine mode calls the LLM once per chunk).
    """
    from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode

    from nest_integrations.context import map_to_documents

    retrieved = list(getattr(response, "source_nodes", None) or [])
    text = str(getattr(response, "response", "") or "")
    answer = next((c for c in reversed(calls) if c["result"].text.strip() == text.strip()), calls[-1] if calls else None)
    citations: list[dict[str, Any]] = []
    span_nodes = []
    if answer is not None and not answer["result"].abstained:
        docs = _node_documents(retrieved)
        found = []
        for k, call in enumerate(calls):
            mapped = map_to_documents(call["result"].spans, call["messages"], docs)
            if k > 0:
                # refine: a span copied from the existing answer keeps the citation that answer had
                inside = {id(c.span) for c in mapped}
                for sp in call["result"].spans:
                    if id(sp) in inside:
                        continue
                    for prev in found:
                        off = prev.text.find(sp.text)
                        if off >= 0:
                            mapped.append(
                                type(prev)(
                                    prev.document, sp.text, prev.start + off, prev.start + off + len(sp.text),
                                    prev.source,
                                    None if prev.source_start is None else prev.source_start + off,
                                    None if prev.source_start is None else prev.source_start + off + len(sp.text),
                                    sp,
                                )
                            )
                            break
                mapped.sort(key=lambda c: c.span.response_start)
            found = mapped
            if call is answer:
                break
        for c in found:
            node = retrieved[c.document].node
            base = node.start_char_idx
            cit = {
                "cited_text": c.text,
                "node_id": node.node_id,
                "ref_doc_id": node.ref_doc_id,
                "start_char_idx": (base + c.start) if base is not None else None,
                "end_char_idx": (base + c.end) if base is not None else None,
                "node_start": c.start,
                "node_end": c.end,
                "source": c.source,
                "source_start": c.source_start,
                "source_end": c.source_end,
                "response_start": c.span.response_start,
                "response_end": c.span.response_end,
            }
            citations.append(cit)
            span = TextNode(
                text=c.text,
                metadata={**node.metadata, **{k: v for k, v in cit.items() if k != "cited_text"}},
                start_char_idx=cit["start_char_idx"],
                end_char_idx=cit["end_char_idx"],
            )
            span.relationships[NodeRelationship.PARENT] = RelatedNodeInfo(node_id=node.node_id)
            if node.ref_doc_id is not None:
                span.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=node.ref_doc_id)
            span_nodes.append(NodeWithScore(node=span, score=retrieved[c.document].score))
    meta = dict(getattr(response, "metadata", None) or {})
    meta["citations"] = citations
    meta["retrieved_nodes"] = retrieved
    if answer is not None:
        meta.update({k: v for k, v in _extra(answer["result"]).items() if k not in ("citations", "passages")})
    response.metadata = meta
    response.source_nodes = span_nodes
    return response


def query_with_citations(query_engine: Any, query: Any) -> Any:
    """``query_engine.query(query)`` with ``Settings.llm = NestLLM()`` (context mode), its copied spans put into
    the response by :func:`cite_response` (``source_nodes`` = the copied spans, ``metadata["citations"]``)."""
    with collect_calls() as calls:
        response = query_engine.query(query)
    return cite_response(response, calls)


async def aquery_with_citations(query_engine: Any, query: Any) -> Any:
    """:func:`query_with_citations` with ``aquery``."""
    with collect_calls() as calls:
        response = await query_engine.aquery(query)
    return cite_response(response, calls)


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
