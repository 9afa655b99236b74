"""NestEngine: one object that answers with NEST over a corpus, framework-free.

Flow of one request: query → passage retriever → top-b chunks → their token keys (cached or
encoded now) → decoding loop → text + copied spans + statistics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from nest_integrations.attribution import citations_of, find_runs, find_spans
from nest_integrations.chunks import Chunk, Document, chunks_from_documents, validate_chunks
from nest_integrations.config import NestConfig
from nest_integrations.decoding.cache import check_rollback
from nest_integrations.decoding.loop import NestDecoder
from nest_integrations.errors import ConfigError, PromptTooLongError
from nest_integrations.models import LoadedModel, load_model
from nest_integrations.prompts import Message, render_prompt, retrieval_query_of, to_messages, with_context
from nest_integrations.results import GenerationStats, NestDelta, NestResult, RetrievedPassage, SentenceSupport
from nest_integrations.retrieval import PassageRetriever, make_retriever
from nest_integrations.sentences import split_sentences
from nest_integrations.store import KeyEncoder, TokenStore
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
    ) -> None:
        check_rollback(lm.model)  # refuse a model NEST cannot decode with now, not at the first request
        self.lm = lm
        self.config = config or NestConfig()
        self.chunks = validate_chunks(chunks)
        self.encoder = KeyEncoder(lm, self.config.key_layer)
        self.token_store = token_store if token_store is not None else TokenStore(len(self.chunks), self._encode_chunks)
        self._retriever = retriever
        self._sentence_emb: dict[int, Any] = {}
        self._idf: tuple[int, dict[str, float]] | None = None
        self._idf_lock = threading.Lock()
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
        hit_chunks = [(self.chunks[i].chunk_id, self.chunks[i].text) for i, _ in hits]
        answers_questions = not raw and cfg.method != "base"
        relevance = None
        query = retrieval_query
        if query is None and cfg.method != "base":
            query = retrieval_query_of(to_messages(prompt, cfg.system_prompt), cfg.conversation_query)
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
        # with the support gate on, nothing is streamed before the first sentence is judged
        gate = answers_questions and cfg.abstain == "retrieval+support"
        sentence_policy = answers_questions and (cfg.max_sentences is not None or cfg.stop_after_cited_sentence)
        offsets = [store.chunks[c][1].offsets for c in range(len(req_chunks))] if store is not None else []
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
            prompt_ids, store, cfg.max_new_tokens, chunk_docs=[c.doc_id for c in req_chunks], first_draft=first_draft
        )
        abstained = False

        def decode(token_ids: list[int]) -> str:
            # a chat answer does not start with the space its first (copied) token carries
            out = tok.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            return out if raw else out.lstrip()

        try:
            for commits in gen:
                done = False
                for c in commits:
                    if c.token in eos:
                        finish, done = "eos", True
                        break
                    ids.append(c.token)
                    sources.append(c.source)
                    ends.append(len(decode(ids)))
                if not stats.first_token_s:
                    stats.first_token_s = time.perf_counter() - t_start
                text = decode(ids)
                cut = _find_stop(text, cfg.stop, max(0, emitted - holdback))
                if cut is not None:
                    text, finish, done = text[:cut], "stop", True
                if sentence_policy:
                    cut = self._sentence_stop(cfg, text, sources, ends, req_chunks, offsets)
                    if cut is not None:
                        text, finish, done = text[:cut], "sentence", True
                if gate:
                    sents = split_sentences(text)
                    first_done = len(sents) > 1 or done or (sents and _complete(text, sents[0]))
                    if not first_done and len(ids) < cfg.max_new_tokens:
                        continue
                    gate = False
                    if sents:
                        first = sents[0]
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
                    spans = find_spans(
                        sources, ends, text[:safe], req_chunks, offsets, closed_upto=len(ids),
                        min_words=cfg.min_citation_words,
                    )
                    new_spans = [s for s in spans[n_spans_emitted:] if s.response_end <= safe]
                    n_spans_emitted += len(new_spans)
                    yield NestDelta(text[emitted:safe], new_spans)
                    emitted = safe
        finally:
            gen.close()
        stats.forward_passes = decoder.stats.forward_passes
        stats.tokens_drafted = decoder.stats.tokens_drafted
        stats.tokens_accepted = decoder.stats.tokens_accepted
        stats.prefill_s = decoder.stats.prefill_s
        stats.decode_s = decoder.stats.decode_s
        stats.output_tokens = len(ids)
        if abstained:
            stats.total_s = time.perf_counter() - t_start
            if not stats.first_token_s:
                stats.first_token_s = stats.total_s
            yield self._abstention(cfg, stats, passages, relevance, "support", query)
            return
        # a generation cut inside a multi-byte character leaves a replacement character: drop it
        text = text.rstrip("\ufffd")
        # tokens wholly after a cut (stop string, sentence end) are not part of the answer
        n_keep = sum(1 for i in range(len(ids)) if (ends[i - 1] if i else 0) < len(text))
        ids, sources, ends = ids[:n_keep], sources[:n_keep], ends[:n_keep]
        runs = find_runs(sources, ends, text, req_chunks, offsets)
        spans = citations_of(runs, cfg.min_citation_words)
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
            runs=runs,
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

        The best :data:`~nest_integrations.answer_selection.SUPPORT_WEIGHTS` score (MiniLM cosine plus
        IDF-weighted coverage of the question's words) of any sentence of the chunks; a question scoring
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
            emb = np.asarray(
                enc.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False),
                dtype=np.float32,
            )
            for i in missing:
                sent = emb[[n for n, o in enumerate(owners) if o == i]]
                self._sentence_emb[i] = (sent, emb[owners.index(-1 - i)])
        with self._idf_lock:
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
