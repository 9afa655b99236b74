"""``NestQueryEngine``: a LlamaIndex query engine whose ``source_nodes`` are the spans NEST copied.

Each source node is one copied span: node text = the span, ``start_char_idx`` / ``end_char_idx`` = its
place in the source document, SOURCE relationship = that document, metadata = the source chunk's
metadata (file path, …) plus the span's place in the response. Unlike ``CitationQueryEngine``, the
citations are not numbers the LLM was asked to write: they are verified by construction.

``Response.metadata`` says what the answer is worth: ``sentences`` (one support label per sentence:
copied / grounded / unsupported, with its character range and chunk ids), ``abstained`` (NEST answered
``abstain_message`` because no retrieved passage is close enough to the question: no source nodes
then; ``abstain_reason`` says why), ``truncated`` (cut by ``max_new_tokens``), ``finish_reason``, ``relevance``, ``nest_stats`` and
the retrieved ``passages``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
from pydantic import Field

from nest_integrations._async import call_in_thread
from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError, EmptyQuestionError
from nest_integrations.results import answer_labels

__all__ = ["NestQueryEngine", "CopiedSpanEvent", "span_to_node"]

dispatcher = get_dispatcher(__name__)


class CopiedSpanEvent(BaseEvent):
    """Emitted through the LlamaIndex dispatcher for every span NEST copied into an answer."""

    cited_text: str
    doc_id: str
    chunk_id: str
    source: str | None = None
    start_char_idx: int
    end_char_idx: int
    response_start: int
    response_end: int
    n_tokens: int

    @classmethod
    def class_name(cls) -> str:
        return "CopiedSpanEvent"


def span_to_node(span: Any, chunk_metadata: dict[str, Any] | None = None, score: float | None = None) -> NodeWithScore:
    """One copied span as a ``NodeWithScore`` (see the module docs for the fields)."""
    meta = dict(chunk_metadata or {})
    meta.update(
        doc_id=span.doc_id,
        chunk_id=span.chunk_id,
        response_start=span.response_start,
        response_end=span.response_end,
        n_tokens=span.n_tokens,
    )
    node = TextNode(
        id_=f"{span.chunk_id}@{span.doc_start}-{span.doc_end}:{span.response_start}",
        text=span.text,
        metadata=meta,
        start_char_idx=span.doc_start,
        end_char_idx=span.doc_end,
    )
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=span.doc_id)
    return NodeWithScore(node=node, score=score)


class NestQueryEngine(CustomQueryEngine):
    """Answer queries with NEST; ``Response.source_nodes`` are the copied spans (exact offsets).

    Build with :meth:`from_documents` (LlamaIndex documents, any node parser) or :meth:`from_index`
    (an existing ``VectorStoreIndex`` / retriever as the passage stage), or pass ``engine``.
    ``streaming=True`` returns a ``StreamingResponse`` whose ``source_nodes`` and ``metadata`` are
    complete when the stream ends. See the module docs for ``Response.metadata`` (support labels,
    abstention, truncation).

    Safe to share between threads and asyncio tasks (``aquery``): the engine decides how requests share
    the model. Cancelling an ``aquery`` task stops decoding within one step.
    """

    engine: Any = Field(default=None, exclude=True)
    streaming: bool = False
    nest_config: NestConfig | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.engine is None:
            raise ConfigError("NestQueryEngine needs an engine: use from_documents(...) or from_index(...)")

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Any],
        *,
        node_parser: Any = None,
        model: Any = None,
        nest_config: NestConfig | None = None,
        **kwargs: Any,
    ) -> NestQueryEngine:
        """Parse LlamaIndex documents into nodes (default ``SentenceSplitter``), index them, and answer over them.

        Raises:
            EmptyCorpusError: no node with text.
        """
        from nest_integrations.datastore import Datastore
        from nest_integrations.llama_index.documents import chunks_from_llama_index
        from nest_integrations.models import LoadedModel, load_model

        lm = model if isinstance(model, LoadedModel) else load_model(model)
        docs, chunks, problems = chunks_from_llama_index(documents, node_parser=node_parser)
        if problems:
            import warnings

            warnings.warn(f"{len(problems)} node(s) not indexed: {problems[0]}", stacklevel=2)
        store = Datastore.build(lm, chunks, documents=docs, progress=False)
        cfg = nest_config or NestConfig()
        return cls(engine=store.engine(cfg), nest_config=cfg, **kwargs)

    @classmethod
    def from_index(
        cls,
        index: Any,
        *,
        model: Any = None,
        documents: Sequence[Any] | None = None,
        similarity_top_k: int | None = None,
        nest_config: NestConfig | None = None,
        **kwargs: Any,
    ) -> NestQueryEngine:
        """Use an existing ``VectorStoreIndex`` (or any index with a docstore) as the passage stage.

        The index's nodes become the datastore (offsets verified against ``documents`` when given);
        retrieval per query is the index's own retriever.

        Raises:
            EmptyCorpusError: the index holds no node.
        """
        from nest_integrations.llama_index.documents import LlamaIndexPassageRetriever
        from nest_integrations.llama_index.llms import datastore_from_index

        store = datastore_from_index(index, model, documents)
        cfg = nest_config or NestConfig()
        if similarity_top_k:
            cfg = cfg.replace(passages=similarity_top_k)
        retriever = LlamaIndexPassageRetriever(index, store.chunks)
        return cls(engine=store.engine(cfg, retriever=retriever), nest_config=cfg, **kwargs)

    # ---- querying -------------------------------------------------------------------------------
    def _meta_of(self, chunk_id: str) -> dict[str, Any]:
        if not hasattr(self, "_chunk_meta"):
            object.__setattr__(self, "_chunk_meta", {c.chunk_id: dict(c.metadata) for c in self.engine.chunks})
        return dict(self._chunk_meta.get(chunk_id, {}))

    def _event(self, span: Any) -> None:
        dispatcher.event(
            CopiedSpanEvent(
                cited_text=span.text,
                doc_id=span.doc_id,
                chunk_id=span.chunk_id,
                source=span.source,
                start_char_idx=span.doc_start,
                end_char_idx=span.doc_end,
                response_start=span.response_start,
                response_end=span.response_end,
                n_tokens=span.n_tokens,
            )
        )

    def _node(self, span: Any, scores: dict[str, float]) -> NodeWithScore:
        return span_to_node(span, self._meta_of(span.chunk_id), scores.get(span.chunk_id))

    def _run(self, query_str: str, cancel: threading.Event | None = None) -> Iterator[Any]:
        if not query_str or not query_str.strip():
            raise EmptyQuestionError("the query is empty")
        opts = self.nest_config.model_dump() if self.nest_config else {}
        return self.engine.stream(query_str, cancel=cancel, **opts)

    @dispatcher.span
    def custom_query(self, query_str: str) -> Response | StreamingResponse:
        return self._answer(query_str, None)

    def _answer(self, query_str: str, cancel: threading.Event | None) -> Response | StreamingResponse:
        if self.streaming:
            return self._streaming(query_str)
        result = None
        for d in self._run(query_str, cancel):
            result = d.result or result
        assert result is not None
        scores = {p.chunk_id: p.score for p in result.passages}
        spans = _citations(result)
        for span in spans:
            self._event(span)
        nodes = [self._node(s, scores) for s in spans]
        return Response(result.text, source_nodes=nodes, metadata=_metadata(result))

    def _streaming(self, query_str: str) -> StreamingResponse:
        source_nodes: list[NodeWithScore] = []
        response = StreamingResponse(response_gen=iter(()), source_nodes=source_nodes, metadata={})
        deltas = self._run(query_str)

        def gen() -> Iterator[str]:
            for d in deltas:
                for span in d.spans:  # each span as soon as it is complete
                    self._event(span)
                if d.text:
                    yield d.text
                if d.result is not None:
                    scores = {p.chunk_id: p.score for p in d.result.passages}
                    source_nodes.extend(self._node(s, scores) for s in _citations(d.result))
                    response.metadata.update(_metadata(d.result))

        response.response_gen = gen()
        return response

    async def acustom_query(self, query_str: str) -> Response | StreamingResponse:
        return await call_in_thread(lambda cancel: self._answer(query_str, cancel))


def _citations(result: Any) -> list[Any]:
    """The spans that become source nodes: none for an abstention."""
    return [] if result.abstained else list(result.spans)


def _metadata(result: Any) -> dict[str, Any]:
    """``Response.metadata``: support labels, abstention, finish reason, statistics, retrieved passages."""
    return {
        **answer_labels(result),
        "nest_stats": result.stats.to_dict(),
        "passages": [p.__dict__ for p in result.passages],
    }
