"""NestEngine: one object that answers with NEST over a corpus, framework-free.

Flow of one request: query → passage retriever → top-b chunks → their token keys (cached or
encoded now) → decoding loop → text + copied spans + statistics.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from nest_integrations.answer_selection import is_text_task
from nest_integrations.attribution import CopiedSpan, RunTracker, citations_of, find_runs, find_spans
from nest_integrations.chunks import Chunk, Document, chunks_from_documents, validate_chunks
from nest_integrations.concurrency import model_gate
from nest_integrations.config import NestConfig
from nest_integrations.decoding.batching import forward_batcher
from nest_integrations.decoding.cache import check_rollback
from nest_integrations.decoding.detokenize import IncrementalDetokenizer
from nest_integrations.decoding.loop import NestDecoder
from nest_integrations.errors import ConfigError, PromptTooLongError, RequestCancelledError
from nest_integrations.models import LoadedModel, load_model
from nest_integrations.prompts import Message, render_prompt, retrieval_query_of, to_messages, with_context
from nest_integrations.results import GenerationStats, NestDelta, NestResult, RetrievedPassage, SentenceSupport
from nest_integrations.retrieval import PassageRetriever, make_retriever
from nest_integrations.sentences import SentenceScanner, split_sentences
from nest_integrations.store import ChunkKeys, KeyEncoder, TokenStore
from nest_integrations.support import label_sentences

__all__ = ["NestEngine", "NestResult", "NestDelta", "GenerationStats", "RetrievedPassage"]


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
        idf_texts: the texts whose document frequencies weight the question's words for the answer proposer
            and the support score (default: the chunks; context mode, with a few chunks, uses sentences).
        prompt_keys: for chunks whose text lies inside the prompt (context mode): given the prompt's token ids
            and its prefill's key-layer states (P, D), the :class:`ChunkKeys` of those chunks (by chunk index),
            taken from the prefill instead of encoding each chunk again; chunks it leaves out are encoded.
        batching: continuous batching — the decoding steps of concurrent requests on this model share padded
            forward passes (:mod:`nest_integrations.decoding.batching`); each request still returns what it
            returns alone, up to float rounding at near-ties. Off by default (one request at a time gains
            nothing from it); ``nest serve`` turns it on.

    One engine may serve many threads and asyncio tasks at once: requests take turns on the model
    through its gate (:func:`~nest_integrations.concurrency.model_gate`), step by step, and each returns
    exactly what it returns alone; the adapters hold no locks of their own. See
    :mod:`nest_integrations.concurrency` for the contract and :meth:`stream` for cancellation.

    Raises:
        UnsupportedModelError: the model's cache cannot be rolled back after a rejected draft (recurrent
            state, or no default dynamic cache; :func:`~nest_integrations.decoding.cache.check_rollback`).
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
        idf_texts: Sequence[str] | None = None,
        prompt_keys: Callable[[Sequence[int], Any], Mapping[int, ChunkKeys]] | None = None,
        batching: bool = False,
    ) -> None:
        check_rollback(lm.model)  # refuse a model NEST cannot decode with now, not at the first request
        self.lm = lm
        self.config = config or NestConfig()
        self.chunks = validate_chunks(chunks)
        self.encoder = KeyEncoder(lm, self.config.key_layer)
        # the one place that decides how requests share the model (and the tokenizer, and this engine's
        # caches): everything a request computes runs with this gate held
        self._gate = model_gate(lm.model)
        self.token_store = (
            token_store
            if token_store is not None
            else TokenStore(len(self.chunks), self._encode_chunks, lock=self._gate)
        )
        self._retriever = retriever
        self._prompt_keys = prompt_keys
        self.batching = batching
        self._sentence_emb: dict[int, Any] = {}
        self._idf: tuple[int, dict[str, float]] | None = None
        if idf_texts is not None:
            from nest_integrations.answer_selection import idf_table

            self._idf = (len(self.chunks), idf_table(list(idf_texts)))
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

    def _encode_chunks(self, indices: Sequence[int]) -> list[ChunkKeys]:
        with self._gate:
            return self.encoder.encode([self.chunks[i].text for i in indices])

    @property
    def retriever(self) -> PassageRetriever:
        """The passage stage (built on first use)."""
        if self._retriever is None:
            with self._gate:
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
        with self._gate:
            return self._retrieve(query, k, exclude_doc_ids)

    def _retrieve(self, query: str, k: int, exclude_doc_ids: Collection[str]) -> list[tuple[int, float]]:
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
        with self._gate:
            return self._prepare(prompt, retrieval_query, raw, exclude_doc_ids, overrides)

    def _prepare(
        self,
        prompt: str | Sequence[Message],
        retrieval_query: str | None,
        raw: bool,
        exclude_doc_ids: Collection[str],
        overrides: dict[str, Any],
    ) -> tuple[list[int], list[tuple[int, float]], NestConfig]:
        cfg = self.config.replace(**overrides) if overrides else self.config
        if cfg.key_layer != self.config.key_layer:
            raise ConfigError("key_layer cannot change per call: the token store was built for another layer")
        messages = to_messages(prompt, cfg.system_prompt)
        query = retrieval_query if retrieval_query is not None else retrieval_query_of(messages, cfg.conversation_query)
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
        cancel: threading.Event | None = None,
        **overrides: Any,
    ) -> NestResult:
        """Answer ``prompt`` (a question or chat messages); see :meth:`stream` for the arguments.

        Raises:
            RequestCancelledError: ``cancel`` was set before the answer was complete.
        """
        result = None
        for delta in self.stream(
            prompt,
            retrieval_query=retrieval_query,
            raw=raw,
            exclude_doc_ids=exclude_doc_ids,
            cancel=cancel,
            **overrides,
        ):
            result = delta.result or result
        assert result is not None
        return result

    def generate_many(
        self,
        prompts: Sequence[str | Sequence[Message]],
        *,
        max_concurrency: int = 8,
        raw: bool = False,
        cancel: threading.Event | None = None,
        **overrides: Any,
    ) -> list[NestResult]:
        """Answer several prompts at once, their decoding steps sharing forward passes (continuous batching).

        Up to ``max_concurrency`` requests decode at a time, each in its own thread; a request that finishes
        makes room for the next prompt at once (no request waits for the slowest of a static batch). Each
        result is what :meth:`generate` returns for its prompt alone, up to float rounding of the batched
        kernels at near-ties of the mixture's argmax. Results come back in the order of ``prompts``.

        Args:
            prompts: questions or chat-message lists.
            max_concurrency: most requests decoding at the same time (the batch size of a shared step).
            raw, overrides: as in :meth:`stream`, for every prompt.
            cancel: stops every request still running (:class:`RequestCancelledError` is raised).

        Raises:
            ConfigError: ``max_concurrency`` is below 1.
            RequestCancelledError: ``cancel`` was set before every answer was complete.
        """
        from concurrent.futures import ThreadPoolExecutor

        if isinstance(prompts, str):
            raise ConfigError("generate_many takes a list of prompts; for one prompt call generate()")
        if int(max_concurrency) < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        if overrides:
            self.config.replace(**overrides)  # a bad override fails here, before any thread starts
        prompts = list(prompts)
        if not prompts:
            return []
        stop = cancel if cancel is not None else threading.Event()

        def one(p: str | Sequence[Message]) -> NestResult:
            result = None
            for delta in self.stream(p, raw=raw, cancel=stop, batching=True, **overrides):
                result = delta.result or result
            assert result is not None
            return result

        with ThreadPoolExecutor(max_workers=min(int(max_concurrency), len(prompts))) as pool:
            futures = [pool.submit(one, p) for p in prompts]
            try:
                return [f.result() for f in futures]
            except BaseException:
                stop.set()  # one failed (or we were interrupted): the others stop at their next step
                raise

    def stream(
        self,
        prompt: str | Sequence[Message],
        *,
        retrieval_query: str | None = None,
        raw: bool = False,
        exclude_doc_ids: Collection[str] = (),
        cancel: threading.Event | None = None,
        batching: bool | None = None,
        **overrides: Any,
    ) -> Iterator[NestDelta]:
        """Stream the answer as :class:`NestDelta` pieces; the last one carries the :class:`NestResult`.

        Safe to call from many threads at once (see :mod:`nest_integrations.concurrency`): the request
        holds its model's gate while it computes and releases it before each delta it yields, so
        requests take turns step by step and each returns what it would return alone. Closing the
        generator (or dropping it) stops decoding before the next step.

        Args:
            prompt: a question, or chat messages (``role``/``content`` dicts).
            retrieval_query: text used to retrieve passages (default: the last user message).
            raw: feed the text without the chat template (completion mode).
            exclude_doc_ids: documents the passage stage must not return for this call.
            cancel: an event that stops the request when set, from any thread: decoding ends within one
                step (one forward pass) and the stream raises :class:`RequestCancelledError`.
            batching: share forward passes with the other requests decoding at the same time (continuous
                batching, :mod:`nest_integrations.decoding.batching`); None = the engine's ``batching``.
            overrides: :class:`NestConfig` fields for this call only (e.g. ``max_new_tokens=64``).

        Raises:
            RequestCancelledError: ``cancel`` was set before the answer was complete.
        """
        batched = self.batching if batching is None else bool(batching)
        steps = self._stream(prompt, retrieval_query, raw, exclude_doc_ids, cancel, overrides, batched)
        batcher = forward_batcher(self.lm.model) if batched else None
        try:
            while True:
                if not self._gate.acquire(cancel):
                    raise RequestCancelledError("the request was cancelled while it waited for the model")
                if batcher is not None:
                    batcher.enter_step()
                try:
                    delta = next(steps, None)
                finally:
                    if batcher is not None:
                        batcher.leave_step()
                    self._gate.release()
                if delta is None:
                    return
                yield delta  # never with the gate held: a slow consumer does not hold up other requests
        finally:
            steps.close()

    def _stream(
        self,
        prompt: str | Sequence[Message],
        retrieval_query: str | None,
        raw: bool,
        exclude_doc_ids: Collection[str],
        cancel: threading.Event | None,
        overrides: dict[str, Any],
        batching: bool = False,
    ) -> Iterator[NestDelta]:
        """The work of :meth:`stream`, resumed with the model gate held.

        Linear in the answer: each committed token is detokenised alone
        (:class:`~nest_integrations.decoding.detokenize.IncrementalDetokenizer`), copied runs are made
        into spans as they close (:class:`~nest_integrations.attribution.RunTracker`), stop strings are
        searched for in the new text only, and the stop policy scans only the new sentences
        (:class:`_SentencePolicy`). The last step (a cut) and the final result recompute over the whole
        answer once.
        """
        t_start = time.perf_counter()
        _check_cancel(cancel)
        stats = GenerationStats()
        prompt_ids, hits, cfg = self.prepare(
            prompt, retrieval_query=retrieval_query, raw=raw, exclude_doc_ids=exclude_doc_ids, **overrides
        )
        stats.retrieval_s = time.perf_counter() - t_start
        stats.prompt_tokens = len(prompt_ids)
        passages = [RetrievedPassage(self.chunks[i].chunk_id, self.chunks[i].doc_id, s) for i, s in hits]
        hit_chunks = [(self.chunks[i].chunk_id, self.chunks[i].text) for i, _ in hits]
        relevance = None
        query = retrieval_query
        if query is None and cfg.method != "base":
            query = retrieval_query_of(to_messages(prompt, cfg.system_prompt), cfg.conversation_query)
        # abstention, the answer proposer and the sentence limit judge answers to questions: a text task
        # ("Summarize this article.") is copied and cited without them
        answers_questions = not raw and cfg.method != "base" and not (query is not None and is_text_task(query))
        best = None
        if answers_questions and hits and (cfg.abstain != "off" or cfg.answer_draft == "best_sentence"):
            assert query is not None
            best = self.best_sentence(query, [i for i, _ in hits[: cfg.ra_passages]])
            relevance = best[0]
        if answers_questions and cfg.abstain != "off" and hits:
            assert relevance is not None
            if relevance < cfg.abstain_threshold:
                stats.total_s = stats.first_token_s = time.perf_counter() - t_start
                yield self._abstention(cfg, stats, passages, relevance, "retrieval", query)
                return
        store = None
        req_chunks: list[Chunk] = []
        decoder = NestDecoder(self.lm, cfg, forward_batcher(self.lm.model) if batching else None)
        prefill = None
        if cfg.uses_token_store:
            t0 = time.perf_counter()
            idx = [i for i, _ in hits[: cfg.passages]]
            req_chunks = [self.chunks[i] for i in idx]
            if self._prompt_keys is not None:
                # keys of the chunks inside the prompt come from its prefill, which decoding then reuses
                prefill = decoder.prefill(prompt_ids)
                for i, ck in self._prompt_keys(prompt_ids, prefill.hidden).items():
                    if i in idx:
                        self.token_store.put(i, ck)
            # the request's entries live on the model's device: search, p_kNN and the mixture stay there
            store = self.token_store.request_view(idx, [c.text for c in req_chunks], device=self.lm.device)
            stats.keys_s = time.perf_counter() - t0 - (prefill.seconds if prefill is not None else 0.0)

        eos = self.lm.eos_token_ids
        # a chat answer does not start with the space its first (copied) token carries
        detok = IncrementalDetokenizer(self.lm.tokenizer, lstrip=not raw)
        offsets = [store.chunks[c][1].offsets for c in range(len(req_chunks))] if store is not None else []
        runs = RunTracker(req_chunks, offsets, cfg.min_citation_words)
        sources, ends = runs.sources, runs.ends  # per token: its source and the answer's length up to it
        ids: list[int] = []
        text = ""
        emitted = 0  # characters of text streamed so far
        searched = 0  # characters of text already searched for stop strings
        n_spans_emitted = 0
        finish = "length"
        holdback = max((len(s) for s in cfg.stop), default=1) - 1
        # with the support gate on, nothing is streamed before the first sentence is judged
        gate = answers_questions and cfg.abstain == "retrieval+support"
        sentence_policy = answers_questions and (cfg.max_sentences is not None or cfg.stop_after_cited_sentence)
        policy = _SentencePolicy(cfg) if sentence_policy or gate else None
        first_draft = None
        if store is not None and best is not None and best[1] >= 0 and cfg.answer_draft == "best_sentence":
            idx_in_request = [i for i, _ in hits[: cfg.passages]]
            if best[1] in idx_in_request:
                c = idx_in_request.index(best[1])
                offs = offsets[c]
                starts = [p for p in range(len(offs)) if int(offs[p][1]) > best[2][0]]
                if starts:
                    first_draft = (c, starts[0])
        gen = decoder.run(
            prompt_ids,
            store,
            cfg.max_new_tokens,
            chunk_docs=[c.doc_id for c in req_chunks],
            first_draft=first_draft,
            cancel=cancel,
            prefill=prefill,
        )
        abstained = False
        try:
            for commits in gen:
                done = False
                for c in commits:
                    if c.token in eos:
                        finish, done = "eos", True
                        break
                    ids.append(c.token)
                    text += detok.push(c.token)
                    runs.push(c.source, len(text), text)
                if not stats.first_token_s:
                    stats.first_token_s = time.perf_counter() - t_start
                # a cut (stop string, sentence end) ends the answer: that last step looks at the whole text
                was_cut = False
                if cfg.stop:
                    # a stop string that ended before the last search's end would have been found then
                    cut = _find_stop(text, cfg.stop, max(0, searched - holdback))
                    searched = len(text)
                    if cut is not None:
                        text, finish, done, was_cut = text[:cut], "stop", True, True
                if policy is not None and not was_cut:
                    policy.feed(text)
                if sentence_policy:
                    assert policy is not None
                    if was_cut:
                        cut = self._sentence_stop(cfg, text, sources, ends, req_chunks, offsets)
                    else:
                        cut = policy.stop(text, runs)
                    if cut is not None:
                        text, finish, done, was_cut = text[:cut], "sentence", True, True
                if gate:
                    assert policy is not None
                    if was_cut:
                        sents = split_sentences(text)
                        n_sents, first = len(sents), (sents[0] if sents else None)
                    else:
                        n_sents, first = policy.count(text), policy.first(text)
                    first_done = n_sents > 1 or done or (first is not None and _complete(text, first))
                    if not first_done and len(ids) < cfg.max_new_tokens:
                        continue
                    gate = False
                    if first is not None:
                        spans = find_spans(sources, ends, text, req_chunks, offsets, min_words=cfg.min_citation_words)
                        label = label_sentences(text[: first[1]], spans, hit_chunks)[0]
                        if label.support == "unsupported":
                            abstained = True
                            break
                if done:
                    break
                safe = len(text) - holdback if cfg.stop else len(text)
                while safe > emitted and text[safe - 1] == "\ufffd":
                    safe -= 1
                if safe > emitted:
                    # the spans of the runs closed so far, as far as the text streamed now reaches
                    cits = runs.citations
                    first_new = n_spans_emitted
                    while n_spans_emitted < len(cits) and cits[n_spans_emitted].response_end <= safe:
                        n_spans_emitted += 1
                    yield NestDelta(text[emitted:safe], cits[first_new:n_spans_emitted])
                    emitted = safe
        finally:
            gen.close()
        _check_cancel(cancel)
        stats.forward_passes = decoder.stats.forward_passes
        stats.tokens_drafted = decoder.stats.tokens_drafted
        stats.tokens_accepted = decoder.stats.tokens_accepted
        stats.history_drafts = decoder.stats.history_drafts
        stats.prefill_s = decoder.stats.prefill_s
        stats.decode_s = decoder.stats.decode_s
        stats.output_tokens = len(ids)
        if abstained:
            stats.total_s = time.perf_counter() - t_start
            if not stats.first_token_s:
                stats.first_token_s = stats.total_s
            yield self._abstention(cfg, stats, passages, relevance, "support", query)
            return
        text = text.rstrip("\ufffd")
        # the answer's tokens are those with at least one character in it: a token the cut (stop string,
        # sentence end) falls inside is, tokens that start at or after the cut are not (nor in the usage)
        n_keep = bisect.bisect_left(ends, len(text)) + 1 if text else 0
        n_keep = min(n_keep, len(ids))
        ids, sources, ends = ids[:n_keep], sources[:n_keep], ends[:n_keep]
        runs_all = find_runs(sources, ends, text, req_chunks, offsets)
        spans = citations_of(runs_all, cfg.min_citation_words)
        stats.output_tokens = len(ids)
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
            sentences=label_sentences(text, spans, hit_chunks),
            runs=runs_all,
            relevance=relevance,
            retrieval_query=query,
        )
        yield NestDelta(text[emitted:], spans[n_spans_emitted:], result)

    # ---- stop policy and abstention -----------------------------------------------------------
    @staticmethod
    def _sentence_stop(cfg: NestConfig, text: str, sources, ends, req_chunks, offsets) -> int | None:
        """Where the stop policy ends the answer (a sentence end), or None to go on."""
        sents = split_sentences(text)
        complete = list(sents[:-1])
        if sents and _complete(text, sents[-1]):
            complete.append(sents[-1])
        if not complete:
            return None
        if cfg.stop_after_cited_sentence and any(s is not None for s in sources):
            spans = find_spans(sources, ends, text, req_chunks, offsets, min_words=cfg.min_citation_words)
            for st, en in complete:
                if any(sp.response_start < en and sp.response_end > st for sp in spans):
                    return en
        if cfg.max_sentences is not None and len(complete) >= cfg.max_sentences:
            return complete[cfg.max_sentences - 1][1]
        return None

    def relevance(self, query: str, chunk_indices: Sequence[int]) -> float:
        """Support score of ``query`` over the given chunks: the abstention criterion.

        The best :data:`~nest_integrations.answer_selection.SUPPORT_WEIGHTS` score (MiniLM cosine of question
        and sentence and of question and chunk, less the IDF of the rarest question word the chunk lacks) of
        any sentence of the chunks; a question scoring
        below ``abstain_threshold`` is answered with ``abstain_message``.
        """
        return self.best_sentence(query, chunk_indices)[0]

    def best_sentence(self, query: str, chunk_indices: Sequence[int]) -> tuple[float, int, tuple[int, int]]:
        """(support score, chunk index, (start, end) in the chunk text) of the answer proposer's sentence.

        The sentence is the best of :class:`~nest_integrations.answer_selection.SentenceRanker` over the
        sentences of ``chunk_indices`` (best passage first); the score is the question's support score
        (:meth:`relevance`). (-1.0, -1, (0, 0)) when the chunks hold no sentence. Sentence embeddings and the
        corpus IDF table are cached.
        """
        with self._gate:
            return self._best_sentence(query, chunk_indices)

    def _best_sentence(self, query: str, chunk_indices: Sequence[int]) -> tuple[float, int, tuple[int, int]]:
        import numpy as np

        from nest_integrations.answer_selection import SentenceRanker, idf_table
        from nest_integrations.retrieval import load_sentence_encoder

        enc = load_sentence_encoder()
        chunk_indices = list(dict.fromkeys(chunk_indices))
        missing = [i for i in chunk_indices if i not in self._sentence_emb]
        if missing:
            texts: list[str] = []
            owners: list[int] = []
            for i in missing:
                t = self.chunks[i].text
                texts.append(t)  # the whole chunk first (the chunk_score feature), then its sentences
                owners.append(-1 - i)
                for st, en in split_sentences(t):
                    texts.append(t[st:en])
                    owners.append(i)
            # small batches: a batch is padded to its longest text, and a whole chunk is ~6x a sentence
            # (batch 4: 0.18 s per context-mode request against 0.44 s with 64, same embeddings to 2e-7)
            emb = np.asarray(
                enc.encode(texts, batch_size=4, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False),
                dtype=np.float32,
            )
            for i in missing:
                sent = emb[[n for n, o in enumerate(owners) if o == i]]
                self._sentence_emb[i] = (sent, emb[owners.index(-1 - i)])
        if self._idf is None or self._idf[0] != len(self.chunks):
            self._idf = (len(self.chunks), idf_table([c.text for c in self.chunks]))
        idf = self._idf[1]
        q = enc.encode([query], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[0]
        ranker = SentenceRanker(enc, idf=idf)
        ranked, support = ranker.rank(
            query,
            [(self.chunks[i], float(self._sentence_emb[i][1] @ q)) for i in chunk_indices],
            [self._sentence_emb[i][0] for i in chunk_indices],
            query_embedding=q,
        )
        if not ranked:
            return (-1.0, -1, (0, 0))
        top = ranked[0]
        return (support, chunk_indices[top.chunk], (top.start, top.end))

    def _abstention(self, cfg: NestConfig, stats: GenerationStats, passages, relevance, reason: str, query) -> NestDelta:
        text = cfg.abstain_message
        result = NestResult(
            text=text,
            spans=[],
            finish_reason="abstained",
            token_ids=[],
            stats=stats,
            passages=passages,
            method=cfg.method,
            sentences=[SentenceSupport(0, len(text), "unsupported", [])],
            abstained=True,
            relevance=relevance,
            abstain_reason=reason,
            retrieval_query=query,
        )
        return NestDelta(text, [], result)


def _complete(text: str, sentence: tuple[int, int]) -> bool:
    """A sentence is complete once whitespace follows its terminator (or a line break ended it)."""
    end = sentence[1]
    if end >= len(text):
        return False
    return text[end].isspace() and (text[end - 1] in ".!?\"')]»”’" or text[end] == "\n")



def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    best = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


class _SentencePolicy:
    """The stop policy's view of a growing answer, kept up to date step by step.

    :meth:`stop` returns what :meth:`NestEngine._sentence_stop` returns for the same text, but scans only
    the new text for sentences and checks only what changed since the last step: the sentences that
    became complete against every citation, and the citations that appeared (runs closed since, and the
    open run) against the sentences checked before. Pairs checked at an earlier step did not overlap, or
    the answer would have stopped there. The text must only grow between calls (a cut ends the answer).
    """

    def __init__(self, cfg: NestConfig) -> None:
        self.cfg = cfg
        self.scanner = SentenceScanner()
        self._stable_seen = 0  # complete settled sentences already checked against every citation
        self._cits_seen = 0  # closed citations already checked against every complete sentence

    def feed(self, text: str) -> None:
        self.scanner.feed(text)

    def count(self, text: str) -> int:
        """``len(split_sentences(text))``."""
        return len(self.scanner.closed) + (self.scanner.tail(text) is not None)

    def first(self, text: str) -> tuple[int, int] | None:
        """``split_sentences(text)[0]`` (None when there is no sentence)."""
        closed = self.scanner.closed
        return closed[0] if closed else self.scanner.tail(text)

    def _complete(self, text: str) -> tuple[int, tuple[int, int] | None]:
        """The complete sentences: how many of the closed ones (a prefix), and the last one if it is complete."""
        closed = self.scanner.closed
        tail = self.scanner.tail(text)
        if tail is not None:
            return len(closed), (tail if _complete(text, tail) else None)
        if closed and not _complete(text, closed[-1]):
            return len(closed) - 1, None  # the last sentence counts once something follows it
        return len(closed), None

    def stop(self, text: str, runs: RunTracker) -> int | None:
        """Where the stop policy ends the answer (a sentence end), or None to go on."""
        cfg = self.cfg
        n_stable, tail = self._complete(text)
        if not n_stable and tail is None:
            return None
        closed = self.scanner.closed
        if cfg.stop_after_cited_sentence and runs.any_copied:
            end = self._first_cited(text, runs, n_stable, tail)
            if end is not None:
                return end
        n_complete = n_stable + (tail is not None)
        if cfg.max_sentences is not None and n_complete >= cfg.max_sentences:
            k = cfg.max_sentences - 1
            if k < n_stable:
                return closed[k][1]
            assert tail is not None
            return tail[1]
        return None

    def _first_cited(
        self, text: str, runs: RunTracker, n_stable: int, tail: tuple[int, int] | None
    ) -> int | None:
        """End of the first complete sentence that overlaps a citation, or None."""
        closed, sent_ends = self.scanner.closed, self.scanner.closed_ends
        cits = runs.citations
        open_cit = runs.open_citation(text)
        fresh = cits[self._cits_seen :] + ([open_cit] if open_cit is not None else [])
        seen = self._stable_seen
        hit: int | None = None
        for sp in fresh:  # new citations against the sentences checked before
            k = bisect.bisect_right(sent_ends, sp.response_start, 0, seen)
            if k < seen and closed[k][0] < sp.response_end and (hit is None or k < hit):
                hit = k
        if hit is None:  # new complete sentences against every citation
            hit = next((k for k in range(seen, n_stable) if _overlaps(closed[k], runs, open_cit)), None)
        self._stable_seen, self._cits_seen = n_stable, len(cits)
        if hit is not None:
            return closed[hit][1]
        if tail is not None and _overlaps(tail, runs, open_cit):
            return tail[1]
        return None


def _overlaps(sentence: tuple[int, int], runs: RunTracker, open_cit: CopiedSpan | None) -> bool:
    """Whether a citation (closed, or the open run's) overlaps ``sentence`` in the response."""
    st, en = sentence
    m = bisect.bisect_right(runs.citation_ends, st)
    if m < len(runs.citations) and runs.citations[m].response_start < en:
        return True
    return open_cit is not None and open_cit.response_start < en and open_cit.response_end > st


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RequestCancelledError("the request was cancelled")
