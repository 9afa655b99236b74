"""The NEST decoding loop (NEST.md §3): token or span, one-pass verification, KV-cache rollback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nest_integrations.config import NestConfig
from nest_integrations.decoding.acceptor import RelaxedAcceptor, make_acceptor
from nest_integrations.decoding.cache import cache_kwarg, check_croppable, check_rollback, crop_cache, new_cache
from nest_integrations.decoding.knn import knn_distribution, mixture, rrc_lambda, search
from nest_integrations.decoding.proposer import HISTORY, HistoryProposer, NgramProposer, SpanProposer
from nest_integrations.decoding.span_rules import SpanRules
from nest_integrations.key_layer import tap_for
from nest_integrations.models import LoadedModel
from nest_integrations.sentences import split_sentences
from nest_integrations.store.token_store import RequestStore

if TYPE_CHECKING:  # pragma: no cover
    from nest_integrations.decoding.batching import ForwardBatcher

__all__ = ["Committed", "DecodeStats", "NestDecoder", "Prefill"]


@dataclass(frozen=True)
class Committed:
    """One generated token. ``source`` = (request chunk, token position) when copied from the store."""

    token: int
    source: tuple[int, int] | None = None


@dataclass
class Prefill:
    """The prompt's prefill, computed once and shared: by the keys of chunks that lie in the prompt (context
    mode takes them from here instead of encoding the chunks again) and by the decoding that follows.

    Attributes:
        ids: the prompt's token ids (P,).
        cache: the KV cache holding exactly those P positions.
        logits: (V,) float32 LM logits after the last prompt token.
        hidden: (P, D) float32 key-layer states at every prompt position, on the model's device.
        seconds: how long the prefill took.
    """

    ids: list[int]
    cache: object
    logits: torch.Tensor
    hidden: torch.Tensor
    seconds: float


@dataclass
class DecodeStats:
    """Counters of one decoding run (times in seconds)."""

    forward_passes: int = 0
    tokens_drafted: int = 0
    tokens_accepted: int = 0
    drafts: int = 0
    knn_searches: int = 0
    ngram_anchors: int = 0
    history_drafts: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    knn_s: float = 0.0


class NestDecoder:
    """Runs NEST (or a baseline) for one prompt against one :class:`RequestStore`.

    ``run`` is a generator: it yields the list of tokens committed by each step, so callers can
    stream, check EOS / stop strings and stop it by closing it. With ``store=None`` (or an empty
    store) every step is the LM alone (λ = 1), i.e. greedy decoding.

    Raises:
        UnsupportedModelError: (on construction, or at the prefill, before any token is decoded) the model's
            cache cannot be rolled back after a rejected draft (:mod:`nest_integrations.decoding.cache`).
    """

    def __init__(self, lm: LoadedModel, config: NestConfig, batcher: ForwardBatcher | None = None) -> None:
        check_rollback(lm.model)
        self.lm = lm
        self.cfg = config
        self.acceptor = make_acceptor(config.acceptance, config.gamma)
        self.proposer = SpanProposer(config.anchor_rule, config.draft_length)
        self.stats = DecodeStats()
        self.cache = None
        self.rules: SpanRules | None = None
        self.ngram: NgramProposer | None = None
        self.history: HistoryProposer | None = None
        self._ngram_gate: str | None = None
        self._tokens: list[int] = []
        self._vocab = int(lm.model.config.vocab_size)
        self._vocab_out = self._vocab
        self._sentence_ends: dict[int, set[int]] = {}
        self._cache_kw = cache_kwarg(lm.model)
        self._tap = tap_for(lm.model, config.key_layer)
        self.batcher = batcher
        self._eos = frozenset(lm.eos_token_ids)
        self._lm_ends = config.lm_ends_answer

    # ---- model calls ---------------------------------------------------------------------
    def _forward(
        self, ids: list[int], cache, last_only: bool = False, all_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed ``ids`` after the cache; returns logits (P, V) float32 and key-layer states (P, D) float32,
        both on the model's (input) device: nothing of vocabulary size leaves the device (the loop reads
        only scalars from it — the chosen token, λ, the accepted length)."""
        dev = self.lm.device
        if self.batcher is not None and not last_only:
            # continuous batching: this forward joins the other requests' in one padded pass
            logits, hs = self.batcher.forward(
                ids, cache, self._tap, self._cache_kw, dev, lambda: self._forward_alone(ids, cache, False, all_states)
            )
            self.stats.forward_passes += 1
            return logits, hs
        return self._forward_alone(ids, cache, last_only, all_states, count=True)

    def _forward_alone(
        self, ids: list[int], cache, last_only: bool, all_states: bool, count: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unbatched forward of :meth:`_forward`."""
        dev = self.lm.device
        kwargs = {"logits_to_keep": 1} if last_only else {}
        out, states = self._tap.forward(
            input_ids=torch.tensor([ids], dtype=torch.long, device=dev),
            use_cache=True,
            **{self._cache_kw: cache},
            **kwargs,
        )
        if count:
            self.stats.forward_passes += 1
        hs = states[0]
        if last_only and not all_states:
            hs = hs[-1:]
        # with device_map="auto" the last layers may sit on another device than the embeddings: bring the
        # outputs to the input device (device to device, no host copy), where the request store lives
        return out.logits[0].float().to(dev), hs.float().to(dev)

    # ---- distributions ------------------------------------------------------------------
    def _mix(self, store: RequestStore | None, logits: torch.Tensor, hidden: torch.Tensor, lm_only: bool = False):
        """p_M (P, V), λ (P,), neighbour entries (P, r) and p_LM (P, V) at P positions."""
        cfg = self.cfg
        p_lm = torch.softmax(logits / cfg.lm_temperature, dim=-1)
        if store is None or len(store) == 0 or lm_only or cfg.method in ("base", "ra"):
            return p_lm, torch.ones(logits.shape[0], device=logits.device), None, p_lm
        t0 = time.perf_counter()
        allowed = self.rules.sentence_lock() if self.rules is not None and cfg.lock_mixture else None
        nb = search(store, hidden, cfg.neighbors, allowed)
        self.stats.knn_searches += 1
        p_knn = knn_distribution(store, nb, self._vocab, hidden.shape[-1], cfg.knn_temperature)
        if nb.count == 0:
            lam = torch.ones(logits.shape[0], device=logits.device)
        elif cfg.method == "knnlm":
            lam = torch.full((logits.shape[0],), cfg.knn_lambda, device=logits.device)
        else:
            lam = rrc_lambda(nb, cfg.alpha, cfg.tau)
        self.stats.knn_s += time.perf_counter() - t0
        return mixture(p_lm, p_knn, lam), lam, nb.entries, p_lm

    def _choose(self, p_m: torch.Tensor, logits: torch.Tensor, forbid: torch.Tensor | None = None) -> int:
        """argmax p_M (argmax of the LM logits in lossless mode), skipping ``forbid`` (V,) bool tokens.

        Lossless mode ignores ``forbid``: its output must equal greedy decoding token for token.
        """
        top = int(torch.argmax(logits))
        if self.cfg.acceptance == "lossless" or (self._lm_ends and top in self._eos):
            return top
        scores = p_m
        if forbid is not None:
            n = min(scores.shape[-1], forbid.shape[0])
            scores = scores.clone()
            scores[:n][forbid[:n].to(scores.device)] = float("-inf")
        return int(torch.argmax(scores))

    def _ends_sentence(self, store: RequestStore, chunk: int, pos: int) -> bool:
        """Whether chunk token ``pos`` ends a sentence of its chunk, by the shared splitter
        (:func:`nest_integrations.sentences.split_sentences`) — or holds a line break."""
        ends = self._sentence_ends.get(chunk)
        if ends is None:
            ends = {e for _, e in split_sentences(store.texts[chunk])}
            self._sentence_ends[chunk] = ends
        text = store.texts[chunk]
        start, end = (int(x) for x in store.chunks[chunk][1].offsets[pos])
        if "\n" in text[start:end]:
            return True
        while end > start and text[end - 1].isspace():
            end -= 1
        return end in ends

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int]) -> Prefill:
        """Run the prompt through the model once: the cache, the last logits and every position's key-layer
        state (P, D), for :meth:`run` (``prefill=``) and for keys of the chunks the prompt holds."""
        cache = new_cache(self.lm.model)
        t0 = time.perf_counter()
        logits, hidden = self._forward(prompt_ids, cache, last_only=True, all_states=True)
        check_croppable(cache, self.lm.model)
        crop_cache(cache, len(prompt_ids))
        return Prefill(list(prompt_ids), cache, logits[-1], hidden, time.perf_counter() - t0)

    # ---- the loop ------------------------------------------------------------------------
    @torch.inference_mode()
    def run(
        self,
        prompt_ids: list[int],
        store: RequestStore | None,
        max_new_tokens: int,
        chunk_docs: Sequence[str] | None = None,
        first_draft: tuple[int, int] | None = None,
        cancel: threading.Event | None = None,
        prefill: Prefill | None = None,
    ) -> Iterator[list[Committed]]:
        """Decode up to ``max_new_tokens`` tokens after ``prompt_ids``; yields each step's commits.

        State between steps: the KV cache holds the prompt and every committed token except
        ``pending`` (at most one token, committed but not yet fed); ``cur`` is the LM output at the
        last cached token (valid when nothing is pending); ``cont`` is the next chunk position of a
        copied run that continues. Each forward pass feeds the pending token plus the draft of the
        continuing run, so a draft costs no extra pass (NEST.md §3.5–3.6).

        Span rules (:class:`~nest_integrations.decoding.span_rules.SpanRules`): a copy starts only on
        word boundaries and, within a sentence, from the sentence's first source (whose entries alone
        then feed the kNN mixture); a run ends only on a word boundary. Copied tokens are held back
        until their run has ``min_citation_words`` words and ends on a boundary; a run that ends
        shorter is yielded as generated text (no attribution), so every yielded copy is a citation.
        ``chunk_docs``: document id of each request chunk (for ``sentence_source="document"``).
        ``first_draft``: (request chunk, token position) whose continuation is the first draft — the
        answer proposer's sentence (``answer_draft="best_sentence"``): its first token starts the answer
        (except in lossless mode), the rest is verified like any draft.
        ``cancel``: checked before every forward pass; once it is set the generator ends (the caller
        tells a cancelled run from a finished one by the event), so at most the pass under way completes.
        ``prefill``: this prompt's :meth:`prefill`, already computed (used once: its cache is decoded on);
        ignored when its ids are not ``prompt_ids``.
        """
        cfg = self.cfg
        use_spans = cfg.method in ("nest", "ra-nest") and store is not None and len(store) > 0
        rules = None
        if use_spans:
            assert store is not None
            docs = list(chunk_docs) if chunk_docs is not None else [str(i) for i in range(len(store.chunks))]
            rules = SpanRules(
                self.lm.tokenizer,
                store,
                docs,
                word_boundaries=cfg.word_boundaries,
                sentence_source=cfg.sentence_source,
                vocab_size=self._vocab_out,
            )
        self.rules = rules
        self._store = store
        gate = cfg.ngram_gate
        if gate == "auto":
            gate = "always" if cfg.acceptance == "lossless" else None
        self.ngram = (
            NgramProposer(store, cfg.ngram_max, cfg.ngram_min)
            if use_spans and cfg.ngram_max > 0 and gate is not None
            else None
        )
        self._ngram_gate = gate
        # the text so far as token ids (a prompt tail, so the first answer tokens can match too)
        self._tokens: list[int] = list(prompt_ids[-cfg.ngram_max :]) if cfg.ngram_max > 0 else []
        history = cfg.history_drafts == "on" or (cfg.history_drafts == "auto" and cfg.acceptance == "lossless")
        self.history = (
            # down to one token, as transformers' prompt lookup does (a wrong draft costs only a longer forward)
            HistoryProposer(list(prompt_ids), cfg.ngram_max, 1) if history and cfg.ngram_max > 0 else None
        )
        self._out: list[Committed] = []
        self._run: list[int] = []  # chunk, first position, last position of the open copied run
        self._run_confirmed = False
        self._buf: list[tuple[Committed, int]] = []
        stats = self.stats
        # a cache rejected drafts can be cropped from (sliding-window layers record their past until the crop)
        if cancel is not None and cancel.is_set():
            return
        if prefill is not None and prefill.ids == list(prompt_ids):
            cache = prefill.cache
            cur_logits, cur_h = prefill.logits, prefill.hidden[-1]
            stats.prefill_s = prefill.seconds
        else:
            cache = new_cache(self.lm.model)
            t0 = time.perf_counter()
            logits, hidden = self._forward(prompt_ids, cache, last_only=True)
            # linear-attention layers only know whether they can be rolled back once initialised (as in
            # transformers' assisted decoding, checked after the prefill, before the first crop)
            check_croppable(cache, self.lm.model)
            crop_cache(cache, len(prompt_ids))
            stats.prefill_s = time.perf_counter() - t0
            cur_logits, cur_h = logits[-1], hidden[-1]
        self.cache = cache  # exposed for inspection (tests check it against a fresh forward)
        t_dec = time.perf_counter()
        n_cached = len(prompt_ids)
        pending: list[Committed] = []
        # (request chunk, position) or (HISTORY, position in the text itself) of the next draft
        cont: tuple[int, int] | None = first_draft if use_spans else None
        answer_start = cont is not None
        run_len = 0
        lm_only = False
        generated = 0
        try:
            while generated < max_new_tokens:
                if cancel is not None and cancel.is_set():
                    return  # between steps: no further forward pass
                remaining = max_new_tokens - generated
                if not pending and cont is None:
                    # decision step at the current position (NEST.md §3.4); any copied run has ended
                    self._end_run()
                    commit, cont, lm_only = self._decide(store, cur_logits, cur_h, lm_only, use_spans)
                    run_len = 1 if commit.source is not None else 0
                    if commit.source is not None:
                        self._mask([commit], store)
                    pending = [commit]
                    generated += 1
                    self._push(commit)
                    if cont is None:
                        self._end_run()
                    if self._out:
                        yield self._take()
                    continue
                # one forward: the pending token + the continuation draft of the current copied run
                draft_pos: list[int] = []
                chunk = -1
                if cont is not None and cont[0] == HISTORY:
                    assert self.history is not None
                    chunk, pos = cont
                    end = min(len(self.history.tokens), pos + self.proposer.draft_length, pos + remaining)
                    draft_pos = list(range(pos, end))
                    cont = None
                elif cont is not None and store is not None:
                    chunk, pos = cont
                    draft_pos = self._cut_draft(
                        store, chunk, self.proposer.draft(store, chunk, pos, remaining), run_len, pos + remaining
                    )
                    cont = None
                if not pending and not draft_pos:
                    continue
                cited = chunk != HISTORY
                if not draft_pos:
                    draft = []
                elif cited:
                    assert store is not None
                    draft = [int(store.chunk_tokens(chunk)[p]) for p in draft_pos]
                else:
                    assert self.history is not None
                    draft = [self.history.tokens[p] for p in draft_pos]
                    stats.history_drafts += 1
                n_p = len(pending)
                logits, hidden = self._forward([c.token for c in pending] + draft, cache)
                k = 0
                p_m = pred_logits = None
                if draft:
                    stats.drafts += 1
                    stats.tokens_drafted += len(draft)
                    if n_p:
                        pred_logits, pred_h = (
                            logits[n_p - 1 : n_p - 1 + len(draft)],
                            hidden[n_p - 1 : n_p - 1 + len(draft)],
                        )
                    else:
                        pred_logits = torch.cat([cur_logits[None], logits[: len(draft) - 1]])
                        pred_h = torch.cat([cur_h[None], hidden[: len(draft) - 1]])
                    if cfg.acceptance == "lossless":
                        p_m = pred_logits  # lossless acceptance and correction read only the LM's logits
                    else:
                        p_m, _, _, _ = self._mix(store, pred_logits, pred_h)
                    acceptor = self.acceptor
                    if answer_start and cfg.acceptance != "lossless" and cfg.answer_gamma is not None:
                        acceptor = RelaxedAcceptor(cfg.answer_gamma)
                    k = acceptor.accept_length(
                        p_m, pred_logits, torch.tensor(draft, dtype=torch.long, device=p_m.device)
                    )
                    if answer_start and cfg.acceptance != "lossless":
                        k = max(k, 1)  # the answer proposer's sentence starts the answer; the LM verifies the rest
                    answer_start = False
                    if rules is not None and cited:
                        k = rules.cut_accepted(chunk, draft_pos, k)
                    if self._lm_ends and cfg.acceptance != "lossless" and k:
                        # the answer ends where the LM would end it: no draft token is accepted past the LM's EOS
                        top = pred_logits[:k].argmax(dim=-1).tolist()
                        k = next((i for i, t in enumerate(top) if t in self._eos), k)
                    stats.tokens_accepted += k
                kept = n_p + k
                # drop the rejected draft tokens (a crop of nothing still trims sliding-window layers)
                crop_cache(cache, n_cached + kept)
                n_cached += kept
                commits = [Committed(draft[i], (chunk, draft_pos[i]) if cited else None) for i in range(k)]
                self._mask(commits, store)
                for c in commits:
                    self._push(c)
                run_len += k
                pending = []
                if k < len(draft):
                    self._end_run()  # the run ends at the rejection
                    if k == 0 and n_p == 0:
                        # a continuation rejected at its first token: nothing to commit, decide afresh
                        if self._out:
                            yield self._take()
                        continue
                    # first rejection: append argmax p_M at that position, without attribution
                    assert p_m is not None and pred_logits is not None
                    forbid = rules.glue_mask() if rules is not None else None
                    corr = Committed(self._choose(p_m[k], pred_logits[k], forbid), None)
                    commits.append(corr)
                    self._push(corr)
                    pending = [corr]
                    run_len = 0
                    if self._ngram_always and store is not None:
                        # the correction's own n-gram may continue a chunk: its draft rides in the forward
                        # pass that feeds the correction (prompt lookup's shape: no pass for it alone)
                        cont = self._ngram_after(store)
                    if cont is None:
                        cont = self._history_after()
                else:
                    cur_logits, cur_h = logits[-1], hidden[-1]
                    if draft and not cited:
                        cont = self._history_after()  # where the text's new last tokens occurred before
                    elif draft:
                        cont, lm_only = self._after_copy(store, chunk, draft_pos[-1], run_len)
                        if cont is None:
                            self._end_run()
                generated += len(commits)
                if self._out:
                    yield self._take()
            self._end_run()
            if self._out:
                yield self._take()
        finally:
            stats.decode_s = time.perf_counter() - t_dec

    # ---- copied runs: confirmed (citations) or turned into generated text -------------------------
    def _take(self) -> list[Committed]:
        out, self._out = self._out, []
        return out

    def _push(self, c: Committed) -> None:
        """Route one committed token: generated tokens pass; copied tokens wait in a buffer until their
        run has ``min_citation_words`` whole words and ends on a word boundary (then they pass as copies),
        or until the run ends short (then they pass as generated text, their store entries unmasked)."""
        self._tokens.append(c.token)
        if self.history is not None:
            self.history.append(c.token)
        rules = self.rules
        if rules is None:
            self._out.append(c)
            return
        idx = rules.observe(c.token, c.source)
        if c.source is None:
            self._end_run()
            self._out.append(c)
            return
        chunk, pos = c.source
        if not (self._run and self._run[0] == chunk and self._run[2] + 1 == pos):
            self._end_run()
            self._run = [chunk, pos, pos]
            self._run_confirmed = False
        self._run[2] = pos
        if self._run_confirmed:
            self._out.append(c)
            return
        self._buf.append((c, idx))
        if rules.ends_word(chunk, pos) and rules.run_words(chunk, self._run[1], pos) >= self.cfg.min_citation_words:
            self._out.extend(b for b, _ in self._buf)
            self._buf = []
            self._run_confirmed = True

    def _end_run(self) -> None:
        """The open run ends here: an unconfirmed run becomes generated text."""
        if self._buf:
            assert self.rules is not None
            for c, idx in self._buf:
                self.rules.revoke(idx)
                self._unmask(first_source=c.source, store=self._store)
                self._out.append(Committed(c.token, None))
            self._buf = []
        self._run = []
        self._run_confirmed = False

    def _decide(self, store, cur_logits, cur_h, lm_only, use_spans):
        """Token or span at the current position: returns (commit, continuation, lm_only)."""
        cfg = self.cfg
        rules = self.rules
        history_missed = False  # the text's own n-gram was looked up for this w and found nothing
        if cfg.acceptance == "lossless":
            # the LM's own token; exact matches (a chunk's, then the text's own) need no kNN search
            w = int(torch.argmax(cur_logits))
            if use_spans and not lm_only and self._ngram_always:
                copied = self._copy_by_ngram(store, w)
                if copied is not None:
                    return copied
            cont = self._history_after(w)
            if cont is not None:
                return Committed(w, None), cont, False
            history_missed = True  # lossless w below is this same argmax
        p_m, lam, entries, p_lm = self._mix(store, cur_logits[None], cur_h[None], lm_only)
        forbid = rules.glue_mask() if rules is not None else None
        w = self._choose(p_m[0], cur_logits, forbid)
        if not use_spans or lm_only or entries is None or entries.shape[1] == 0:
            return Committed(w, None), None if history_missed else self._history_after(w), False
        in_span = float(lam[0]) < cfg.delta
        if self.ngram is not None and cfg.acceptance != "lossless" and (in_span or self._ngram_always):
            copied = self._copy_by_ngram(store, w)
            if copied is not None:
                return copied
        if in_span:
            anchor = self.proposer.anchor(store, entries[0], w, p_lm[0])
            if anchor is not None and int(store.chunk_tokens(anchor[0])[anchor[1]]) != w:
                # lm_preferred rule: the anchor's value is not argmax p_M; copy only if it passes
                # the acceptance rule at this position
                tok = int(store.chunk_tokens(anchor[0])[anchor[1]])
                ok = self.acceptor.accept_length(p_m, cur_logits[None], torch.tensor([tok], device=p_m.device)) == 1
                if ok and forbid is not None and bool(forbid[tok]):
                    ok = False
                if ok and (rules is None or rules.can_start(anchor[0], anchor[1], tok)):
                    w = tok
                else:
                    anchor = None
        elif cfg.continue_in_token_mode:
            e = int(entries[0, 0])
            anchor = None
            if int(store.values[e]) == w:
                anchor = (int(store.entry_chunk[e]), int(store.entry_pos[e]) + 1)
        else:
            anchor = None
        if anchor is not None and rules is not None and not rules.can_start(anchor[0], anchor[1], w):
            anchor = None
        if anchor is None:
            return Committed(w, None), None, False
        chunk, pos = anchor
        cont, lm_only = self._after_copy(store, chunk, pos, 1)
        return Committed(w, anchor), cont, lm_only

    @property
    def _ngram_always(self) -> bool:
        """Whether n-gram matches may start copies outside span mode (``ngram_gate``)."""
        return self.ngram is not None and self._ngram_gate == "always"

    def _free(self, store: RequestStore, chunk: int, pos: int) -> bool:
        """Whether chunk token ``pos`` may be copied again (lossless copies may repeat: the LM decides)."""
        if self.cfg.acceptance == "lossless" or self.cfg.mask_copied == "none" or pos < 1:
            return True
        return not bool(store.mask[store.entry_of(chunk, pos)])

    def _copy_by_ngram(self, store: RequestStore, w: int):
        """``w`` as the first token of a copy where the text's last tokens + ``w`` occur in a chunk:
        (commit, continuation, lm_only) as :meth:`_decide` returns them, or None when nothing matches."""
        anchor = self._ngram_anchor(store, w)
        if anchor is None:
            return None
        self.stats.ngram_anchors += 1
        cont, lm_only = self._after_copy(store, anchor[0], anchor[1], 1)
        return Committed(w, anchor), cont, lm_only

    def _ngram_anchor(self, store: RequestStore, w: int) -> tuple[int, int] | None:
        """Where the response's last tokens + ``w`` occur in a chunk, as a copy of ``w`` may start there."""
        assert self.ngram is not None
        rules = self.rules

        def ok(chunk: int, pos: int) -> bool:
            return self._free(store, chunk, pos) and (rules is None or rules.can_start(chunk, pos, w))

        return self.ngram.match(self._tokens + [w], ok)

    def _history_after(self, w: int | None = None) -> tuple[int, int] | None:
        """A draft from the text itself (no citation): (HISTORY, position) after the latest earlier
        occurrence of the text's last n-gram (plus ``w``, chosen but not committed yet), or None."""
        if self.history is None:
            return None
        p = self.history.match(extra=w)
        return None if p is None else (HISTORY, p)

    def _ngram_after(self, store: RequestStore) -> tuple[int, int] | None:
        """A copy right after the last committed token, where its n-gram occurs: (chunk, next position)."""
        assert self.ngram is not None
        rules = self.rules
        cfg = self.cfg

        def ok(chunk: int, pos: int) -> bool:
            if cfg.acceptance != "lossless" and cfg.span_stop == "sentence_end" and self._ends_sentence(store, chunk, pos):
                return False
            nxt = int(store.chunk_tokens(chunk)[pos + 1])
            return self._free(store, chunk, pos + 1) and (rules is None or rules.can_start(chunk, pos + 1, nxt))

        hit = self.ngram.match(self._tokens, ok)
        if hit is None:
            return None
        self.stats.ngram_anchors += 1
        return hit[0], hit[1] + 1

    def _after_copy(self, store: RequestStore, chunk: int, last_pos: int, run_len: int):
        """After copying chunk token ``last_pos``: (continuation or None, whether the LM picks next)."""
        cfg = self.cfg
        if cfg.span_stop == "sentence_end" and self._ends_sentence(store, chunk, last_pos):
            return None, True
        if cfg.max_span_tokens is not None and run_len >= cfg.max_span_tokens:
            return None, True
        if last_pos + 1 < len(store.chunk_tokens(chunk)):
            return (chunk, last_pos + 1), False
        return None, False

    def _cut_draft(self, store: RequestStore, chunk: int, positions: list[int], run_len: int, limit: int) -> list[int]:
        """Apply the span stop rules to a draft: sentence end (inclusive), the per-run cap, and a word
        boundary at its end (the draft may then extend up to position ``limit``, exclusive)."""
        cfg = self.cfg
        if cfg.max_span_tokens is not None:
            cap = max(0, cfg.max_span_tokens - run_len)
            positions = positions[:cap]
            limit = min(limit, positions[0] + cap) if positions else limit
        if cfg.span_stop == "sentence_end":
            for i, p in enumerate(positions):
                if self._ends_sentence(store, chunk, p):
                    positions = positions[: i + 1]
                    limit = positions[-1] + 1
                    break
            else:
                if positions:
                    # an extension to the next word boundary must not run past the sentence end either
                    p = positions[-1] + 1
                    n_tok = len(store.chunk_tokens(chunk))
                    while p < min(limit, n_tok):
                        if self._ends_sentence(store, chunk, p):
                            limit = p + 1
                            break
                        p += 1
        if self.rules is not None:
            positions = self.rules.trim_draft(chunk, positions, limit)
        return positions

    def _unmask(self, first_source: tuple[int, int] | None, store: RequestStore | None) -> None:
        """Undo the mask of a held copy that turned out not to be one."""
        if store is None or first_source is None or self.cfg.mask_copied == "none":
            return
        chunk, pos = first_source
        if pos >= 1:
            store.mask[store.entry_of(chunk, pos)] = False

    def _mask(self, commits: list[Committed], store: RequestStore | None) -> None:
        """No re-copying (NEST.md §3.7): mask the entries whose values were just copied."""
        mode = self.cfg.mask_copied
        if store is None or mode == "none":
            return
        for i, c in enumerate(commits):
            if c.source is None or (mode == "first" and i > 0):
                continue
            chunk, pos = c.source
            if pos >= 1:
                store.mask[store.entry_of(chunk, pos)] = True
