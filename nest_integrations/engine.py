"""NestEngine: one object that answers with NEST over a corpus, framework-free.

Flow of one request: query → passage retriever → top-b chunks → their token keys (cached or
encoded now) → decoding loop → text + copied spans + statistics.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nest_integrations.attribution import CopiedSpan, find_spans
from nest_integrations.chunks import Chunk, Document, chunks_from_documents, validate_chunks
from nest_integrations.config import NestConfig
from nest_integrations.decoding.loop import NestDecoder
from nest_integrations.errors import ConfigError, PromptTooLongError
from nest_integrations.models import LoadedModel, load_model
from nest_integrations.prompts import Message, last_user_text, render_prompt, to_messages, with_context
from nest_integrations.retrieval import PassageRetriever, make_retriever
from nest_integrations.store import KeyEncoder, TokenStore

__all__ = ["NestEngine", "NestResult", "NestDelta", "GenerationStats", "RetrievedPassage"]


@dataclass(frozen=True)
class RetrievedPassage:
    """A chunk the passage stage returned for a request, with its score."""

    chunk_id: str
    doc_id: str
    score: float


@dataclass
class GenerationStats:
    """Statistics of one request (times in seconds)."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    forward_passes: int = 0
    copied_tokens: int = 0
    span_lengths: list[int] = field(default_factory=list)
    tokens_drafted: int = 0
    tokens_accepted: int = 0
    retrieval_s: float = 0.0
    keys_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    first_token_s: float = 0.0

    @property
    def attribution_ratio(self) -> float:
        """Tokens inside copied spans / output tokens (EOS excluded)."""
        return self.copied_tokens / self.output_tokens if self.output_tokens else 0.0

    @property
    def mean_span_tokens(self) -> float:
        return sum(self.span_lengths) / len(self.span_lengths) if self.span_lengths else 0.0

    @property
    def forwards_per_token(self) -> float:
        """LM forward passes (prefill included) per generated token."""
        return self.forward_passes / self.output_tokens if self.output_tokens else float(self.forward_passes)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            attribution_ratio=self.attribution_ratio,
            mean_span_tokens=self.mean_span_tokens,
            forwards_per_token=self.forwards_per_token,
            tokens_per_s=self.tokens_per_s,
        )
        return d


@dataclass
class NestResult:
    """The answer: text, copied spans (citations), why it stopped, and statistics."""

    text: str
    spans: list[CopiedSpan]
    finish_reason: str
    token_ids: list[int]
    stats: GenerationStats
    passages: list[RetrievedPassage]
    method: str = "nest"

    def to_html(self, documents: dict[str, str] | None = None, question: str | None = None) -> str:
        """A self-contained HTML page: copied spans highlighted and linked to their sources in context."""
        from nest_integrations.html import render_html

        return render_html(self, documents, question)

    def _repr_html_(self) -> str:  # notebooks
        from nest_integrations.html import render_fragment

        return render_fragment(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: text, spans (NEST.md §8 fields), finish_reason, stats, passages."""
        return {
            "text": self.text,
            "method": self.method,
            "finish_reason": self.finish_reason,
            "spans": [s.to_dict() for s in self.spans],
            "stats": self.stats.to_dict(),
            "passages": [asdict(p) for p in self.passages],
        }


@dataclass
class NestDelta:
    """One streamed piece: new text, the spans completed within it, and (last delta only) the result."""

    text: str
    spans: list[CopiedSpan]
    result: NestResult | None = None


class NestEngine:
    """NEST over a corpus of chunks with one causal LM.

    Args:
        lm: the model (see :func:`~nest_integrations.models.load_model`).
        chunks: the corpus, with exact offsets into their documents.
        config: hyperparameters; per-call overrides go to :meth:`generate` / :meth:`stream`.
        retriever: passage stage (default: hybrid dense + BM25 over the chunk texts).
        precompute_keys: encode every chunk now (indexing) instead of on first retrieval.
        token_store: keys of ``chunks`` kept elsewhere (a :class:`~nest_integrations.datastore.Datastore`);
            index ``i`` of the store must be ``chunks[i]``.
    """

    def __init__(
        self,
        lm: LoadedModel,
        chunks: Sequence[Chunk],
        config: NestConfig | None = None,
        *,
        retriever: PassageRetriever | None = None,
        precompute_keys: bool = False,
        token_store: TokenStore | None = None,
    ) -> None:
        self.lm = lm
        self.config = config or NestConfig()
        self.chunks = validate_chunks(chunks)
        self.encoder = KeyEncoder(lm, self.config.key_layer)
        self.token_store = token_store if token_store is not None else TokenStore(len(self.chunks), self._encode_chunks)
        self._retriever = retriever
        if precompute_keys:
            self.token_store.precompute()

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        lm: LoadedModel | None = None,
        config: NestConfig | None = None,
        *,
        chunk_size: int = 800,
        **kwargs: Any,
    ) -> NestEngine:
        """Split documents into chunks (exact offsets) and build an engine; ``lm`` defaults to the default model."""
        return cls(lm or load_model(), chunks_from_documents(documents, chunk_size=chunk_size), config, **kwargs)

    def _encode_chunks(self, indices: Sequence[int]):
        return self.encoder.encode([self.chunks[i].text for i in indices])

    @property
    def retriever(self) -> PassageRetriever:
        if self._retriever is None:
            self._retriever = make_retriever([c.text for c in self.chunks], self.config.retriever)
        return self._retriever

    # ---- one request -----------------------------------------------------------------
    def retrieve(
        self, query: str, k: int, *, exclude_doc_ids: Collection[str] = ()
    ) -> list[tuple[int, float]]:
        """Indices (into ``self.chunks``) and scores of the top-``k`` chunks for ``query``.

        Chunks of documents in ``exclude_doc_ids`` are skipped (e.g. the article a completion prompt
        was taken from); ``k`` chunks are still returned when the rest of the corpus has them.
        """
        if k <= 0:
            return []
        excluded = set(exclude_doc_ids)
        n_excluded = sum(1 for c in self.chunks if c.doc_id in excluded) if excluded else 0
        fetch = min(len(self.chunks), k + n_excluded)
        hits = [(s.index, s.score) for s in self.retriever.retrieve(query, fetch)]
        if excluded:
            hits = [(i, s) for i, s in hits if self.chunks[i].doc_id not in excluded]
        return hits[:k]

    def prepare(
        self,
        prompt: str | Sequence[Message],
        *,
        retrieval_query: str | None = None,
        raw: bool = False,
        exclude_doc_ids: Collection[str] = (),
        **overrides: Any,
    ) -> tuple[list[int], list[tuple[int, float]], NestConfig]:
        """The passage stage and the prompt of one request, without decoding.

        Returns the prompt token ids (chat template, plus the top ``ra_passages`` chunks for RA
        methods), the retrieved ``(chunk index, score)`` hits and the effective config. Used by
        :meth:`stream` and by baselines that decode the same prompt with another decoder.

        Raises:
            PromptTooLongError: prompt + ``max_new_tokens`` exceed the model's context window.
        """
        cfg = self.config.replace(**overrides) if overrides else self.config
        if cfg.key_layer != self.config.key_layer:
            raise ConfigError("key_layer cannot change per call: the token store was built for another layer")
        messages = to_messages(prompt, cfg.system_prompt)
        query = retrieval_query if retrieval_query is not None else last_user_text(messages)
        need = cfg.passages if cfg.uses_token_store else 0
        if cfg.uses_retrieval_in_prompt:
            need = max(need, cfg.ra_passages)
        hits = self.retrieve(query, need, exclude_doc_ids=exclude_doc_ids) if need else []
        if cfg.uses_retrieval_in_prompt:
            passages = [self.chunks[i].text for i, _ in hits[: cfg.ra_passages]]
            messages = with_context(messages, passages, raw=raw)
        prompt_ids = render_prompt(self.lm.tokenizer, messages, raw=raw)
        window = self.lm.context_window
        if len(prompt_ids) + cfg.max_new_tokens > window:
            raise PromptTooLongError(
                f"the prompt has {len(prompt_ids)} tokens; with max_new_tokens={cfg.max_new_tokens} it exceeds "
                f"the model's context window of {window} tokens"
            )
        return prompt_ids, hits, cfg

    def generate(
        self,
        prompt: str | Sequence[Message],
        *,
        retrieval_query: str | None = None,
        raw: bool = False,
        exclude_doc_ids: Collection[str] = (),
        **overrides: Any,
    ) -> NestResult:
        """Answer ``prompt`` (a question or chat messages); see :meth:`stream` for the arguments."""
        result = None
        for delta in self.stream(
            prompt, retrieval_query=retrieval_query, raw=raw, exclude_doc_ids=exclude_doc_ids, **overrides
        ):
            result = delta.result or result
        assert result is not None
        return result

    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        retrieval_query: str | None = None,
        raw: bool = False,
        exclude_doc_ids: Collection[str] = (),
        **overrides: Any,
    ) -> Iterator[NestDelta]:
        """Stream the answer as :class:`NestDelta` pieces; the last one carries the :class:`NestResult`.

        Args:
            prompt: a question, or chat messages (``role``/``content`` dicts).
            retrieval_query: text used to retrieve passages (default: the last user message).
            raw: feed the text without the chat template (completion mode).
            exclude_doc_ids: documents the passage stage must not return for this call.
            overrides: :class:`NestConfig` fields for this call only (e.g. ``max_new_tokens=64``).
        """
        t_start = time.perf_counter()
        stats = GenerationStats()
        prompt_ids, hits, cfg = self.prepare(
            prompt, retrieval_query=retrieval_query, raw=raw, exclude_doc_ids=exclude_doc_ids, **overrides
        )
        stats.retrieval_s = time.perf_counter() - t_start
        stats.prompt_tokens = len(prompt_ids)
        passages = [RetrievedPassage(self.chunks[i].chunk_id, self.chunks[i].doc_id, s) for i, s in hits]
        store = None
        req_chunks: list[Chunk] = []
        if cfg.uses_token_store:
            t0 = time.perf_counter()
            idx = [i for i, _ in hits[: cfg.passages]]
            req_chunks = [self.chunks[i] for i in idx]
            store = self.token_store.request_view(idx, [c.text for c in req_chunks])
            stats.keys_s = time.perf_counter() - t0

        decoder = NestDecoder(self.lm, cfg)
        eos = self.lm.eos_token_ids
        tok = self.lm.tokenizer
        ids: list[int] = []
        sources: list[tuple[int, int] | None] = []
        ends: list[int] = []
        text = ""
        emitted = 0
        n_spans_emitted = 0
        finish = "length"
        holdback = max((len(s) for s in cfg.stop), default=1) - 1
        offsets = [store.chunks[c][1].offsets for c in range(len(req_chunks))] if store is not None else []
        gen = decoder.run(prompt_ids, store, cfg.max_new_tokens)
        try:
            for commits in gen:
                done = False
                for c in commits:
                    if c.token in eos:
                        finish, done = "eos", True
                        break
                    ids.append(c.token)
                    sources.append(c.source)
                    ends.append(len(tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)))
                if not stats.first_token_s:
                    stats.first_token_s = time.perf_counter() - t_start
                text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                cut = _find_stop(text, cfg.stop, max(0, emitted - holdback))
                if cut is not None:
                    text, finish, done = text[:cut], "stop", True
                if done:
                    break
                safe = len(text) - holdback if cfg.stop else len(text)
                while safe > emitted and text[safe - 1] == "\ufffd":
                    safe -= 1
                if safe > emitted:
                    spans = find_spans(sources, ends, text[:safe], req_chunks, offsets, closed_upto=len(ids))
                    new_spans = [s for s in spans[n_spans_emitted:] if s.response_end <= safe]
                    n_spans_emitted += len(new_spans)
                    yield NestDelta(text[emitted:safe], new_spans)
                    emitted = safe
        finally:
            gen.close()
        # a generation cut inside a multi-byte character leaves a replacement character: drop it
        text = text.rstrip("\ufffd")
        spans = find_spans(sources, ends, text, req_chunks, offsets)
        stats.output_tokens = len(ids)
        stats.forward_passes = decoder.stats.forward_passes
        stats.tokens_drafted = decoder.stats.tokens_drafted
        stats.tokens_accepted = decoder.stats.tokens_accepted
        stats.prefill_s = decoder.stats.prefill_s
        stats.decode_s = decoder.stats.decode_s
        stats.span_lengths = [s.n_tokens for s in spans]
        stats.copied_tokens = sum(stats.span_lengths)
        stats.total_s = time.perf_counter() - t_start
        if not stats.first_token_s:
            stats.first_token_s = stats.total_s
        result = NestResult(
            text=text,
            spans=spans,
            finish_reason=finish,
            token_ids=ids,
            stats=stats,
            passages=passages,
            method=cfg.method,
        )
        yield NestDelta(text[emitted:], spans[n_spans_emitted:], result)


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    best = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i < best):
            best = i
    return best
