"""Citations through the RAG chains users already have (issue 13).

``create_stuff_documents_chain(ChatNest(), prompt)`` ends in a ``StrOutputParser``, so the answer that reaches
the caller is a string and the model's ``response_metadata`` (its citations) is lost on the way.
:class:`CitationCollector` is a LangChain callback handler that keeps the citations of every ChatNest / NestLLM
answer of a run; :func:`invoke_with_citations` runs a chain with one and maps each citation to the chain's
``context`` documents (``create_retrieval_chain`` returns them): which document, the offsets in its
``page_content``, and — when the splitter recorded ``start_index`` and the file still holds the text there —
the offsets in the source file.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document as LCDocument
from langchain_core.outputs import LLMResult

from nest_integrations.context import map_to_documents
from nest_integrations.results import CopiedSpan

__all__ = ["CitationCollector", "invoke_with_citations", "ainvoke_with_citations"]


class CitationCollector(BaseCallbackHandler):
    """Collects, per model call of a run, the prompt messages and the answer's citations and metadata.

    ``calls`` is a list of dicts: ``messages`` (role / content dicts as the model saw them), ``citations``
    (ChatNest's citation dicts) and ``response_metadata``. Thread-safe (a chain may run branches in threads).
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._prompts: dict[Any, list[dict[str, str]]] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *, run_id: Any, **kwargs: Any) -> None:
        from nest_integrations.langchain.chat_models import to_nest_messages

        try:
            msgs = to_nest_messages(messages[0]) if messages else []
        except Exception:  # not a conversation ChatNest could take: nothing to map
            msgs = []
        with self._lock:
            self._prompts[run_id] = msgs

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            self._prompts[run_id] = [{"role": "user", "content": prompts[0]}] if prompts else []

    def on_llm_end(self, response: LLMResult, *, run_id: Any, **kwargs: Any) -> None:
        gen = response.generations[0][0] if response.generations and response.generations[0] else None
        meta: dict[str, Any] = {}
        if gen is not None:
            message = getattr(gen, "message", None)
            meta = dict(getattr(message, "response_metadata", None) or gen.generation_info or {})
        with self._lock:
            self.calls.append(
                {"messages": self._prompts.pop(run_id, []), "citations": list(meta.get("citations") or []),
                 "response_metadata": meta}  # fmt: skip
            )


def _spans(citations: list[dict[str, Any]]) -> list[CopiedSpan]:
    return [
        CopiedSpan(text=c["cited_text"], doc_id=str(c["doc_id"]), chunk_id=str(c["chunk_id"]), source=c.get("source"),
                   doc_start=int(c["start"]), doc_end=int(c["end"]), response_start=int(c["response_start"]),
                   response_end=int(c["response_end"]), n_tokens=int(c.get("n_tokens", 0)))  # fmt: skip
        for c in citations
    ]


def _cited(collector: CitationCollector, context: list[LCDocument]) -> list[dict[str, Any]]:
    """The last model call's citations located in the ``context`` documents."""
    if not collector.calls:
        return []
    call = collector.calls[-1]
    located = map_to_documents(_spans(call["citations"]), call["messages"], [(d.page_content, dict(d.metadata)) for d in context])
    out = []
    for c in located:
        doc = context[c.document]
        out.append(
            {"cited_text": c.text, "document_index": c.document, "source": c.source, "start": c.start, "end": c.end,
             "source_start": c.source_start, "source_end": c.source_end, "response_start": c.span.response_start,
             "response_end": c.span.response_end, "metadata": dict(doc.metadata)}  # fmt: skip
        )
    return out


def _with_collector(config: dict[str, Any] | None, collector: CitationCollector) -> dict[str, Any]:
    config = dict(config or {})
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [collector]
    elif isinstance(callbacks, list):
        config["callbacks"] = [*callbacks, collector]
    else:  # a callback manager
        manager = callbacks.copy()
        manager.add_handler(collector, inherit=True)
        config["callbacks"] = manager
    return config


def _package(result: Any, collector: CitationCollector) -> dict[str, Any]:
    out = dict(result) if isinstance(result, dict) else {"answer": result}
    context = list(out.get("context") or [])
    out["citations"] = _cited(collector, context)
    out["cited_documents"] = [
        LCDocument(page_content=c["cited_text"], metadata={**c["metadata"], **{k: c[k] for k in (
            "document_index", "start", "end", "source_start", "source_end", "response_start", "response_end")}})
        for c in out["citations"]
    ]  # fmt: skip
    last = collector.calls[-1]["response_metadata"] if collector.calls else {}
    out["nest"] = {k: last[k] for k in ("sentences", "abstained", "abstain_reason", "truncated", "finish_reason") if k in last}
    return out


def invoke_with_citations(chain: Any, inputs: Any, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``chain`` (e.g. ``create_retrieval_chain(retriever, create_stuff_documents_chain(ChatNest(), prompt))``)
    and return its output dict plus ``citations`` (dicts: the cited text, ``document_index`` into ``context``,
    ``start`` / ``end`` in that document's ``page_content``, ``source`` and ``source_start`` / ``source_end`` in
    the file when they verify, else None, the range in the answer) and ``cited_documents`` (the same as LangChain
    documents), and ``nest`` (support labels, abstention and finish reason of the answer).

    A chain whose output is not a dict (e.g. ``prompt | ChatNest() | StrOutputParser()``) gives ``{"answer": ...}``;
    with no ``context`` documents in the output, ``citations`` is empty (the raw citations are in the
    collector of :class:`CitationCollector`).
    """
    collector = CitationCollector()
    result = chain.invoke(inputs, config=_with_collector(config, collector))
    return _package(result, collector)


async def ainvoke_with_citations(chain: Any, inputs: Any, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`invoke_with_citations` with ``chain.ainvoke``."""
    collector = CitationCollector()
    result = await chain.ainvoke(inputs, config=_with_collector(config, collector))
    return _package(result, collector)
