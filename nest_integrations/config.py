"""NestConfig: every hyperparameter of NEST in one validated object.

Names follow ``NEST.md`` §4 (paper symbol in brackets). Shipped defaults are tuned for the default
model (SmolLM2-135M-Instruct) on the dev data; see ``docs/results.md`` for the measurements.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nest_integrations.errors import ConfigError, FrozenConfigError

__all__ = ["NestConfig", "Method", "REMOVED_FIELDS"]

#: Fields that older versions had and saved (in eval reports, ``--records`` files, JSON dumps of a config):
#: a config holding them still loads, without them (they had no effect any more when they were removed).
REMOVED_FIELDS: frozenset[str] = frozenset({"encode_on_the_fly"})

Method = Literal["nest", "ra-nest", "knnlm", "ra", "base"]


class NestConfig(BaseModel):
    """All NEST hyperparameters in one frozen, validated object.

    Out-of-range values raise :class:`~nest_integrations.errors.ConfigError` naming the field. A config
    never changes once made (so one engine can share it between threads): assigning to a field raises
    :class:`~nest_integrations.errors.FrozenConfigError`; make variants with :meth:`replace`, which
    validates the changes like the constructor does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- what runs -------------------------------------------------------------------------
    method: Method = Field(
        "ra-nest",
        description="nest | ra-nest | knnlm | ra | base (the paper's systems). Default ra-nest: the best NEST-family "
        "system on the mean of both dev sets (docs/results/README.md).",
    )

    # --- passage stage -----------------------------------------------------------------------
    passages: int = Field(5, ge=1, le=1000, description="[b] chunks retrieved per request.")
    retriever: Literal["dense", "hybrid", "rrf", "bm25"] = Field(
        "dense",
        description="Passage retriever: dense (MiniLM), hybrid (paper's score fusion with BM25), rrf "
        "(reciprocal rank fusion with BM25) or bm25. Default dense: best recall@3 on the mean of both dev "
        "sets (docs/results/retrieval-sweep.json).",
    )
    conversation_query: Literal["condensed", "last_user", "all_user"] = Field(
        "condensed",
        description="Retrieval query of a conversation: condensed (a follow-up that refers back, e.g. with "
        "a pronoun, is extended with the previous user turns; see prompts.condensed_query), the last user "
        "message, or all user messages.",
    )
    ra_passages: int = Field(3, ge=1, le=100, description="Chunks put in the prompt by ra / ra-nest.")

    # --- token retrieval ---------------------------------------------------------------------
    key_layer: int = Field(
        -2,
        description="Index into the model's hidden_states tuple used for keys and queries; -2 = input "
        "of the last decoder layer.",
    )
    neighbors: int = Field(
        32,
        ge=1,
        le=100_000,
        description="[r] token neighbours (clamped to the store size). 32: with a few chunks per request a "
        "larger r covers most of the store, λ stays tiny and the mixture degenerates (docs/results/README.md).",
    )

    # --- mixture -----------------------------------------------------------------------------
    alpha: float = Field(0.3, ge=0.0, le=1.0, description="[α] RRC offset: λ = 0.5 at distance ratio α.")
    tau: float = Field(0.1, gt=0.0, le=10.0, description="[τ] RRC temperature.")
    lm_temperature: float = Field(0.7, gt=0.0, le=10.0, description="[T_LM] temperature of p_LM in the mixture.")
    knn_temperature: float = Field(
        1.0, gt=0.0, le=1000.0, description="T in p_kNN = softmax(−d²/(T·√D)); 1 = the paper's."
    )
    knn_lambda: float = Field(0.7, ge=0.0, le=1.0, description="Fixed λ (LM weight) of the kNN-LM baseline.")

    # --- spans -------------------------------------------------------------------------------
    delta: float = Field(0.5, ge=0.0, le=1.0, description="[δ] span mode when λ < δ.")
    gamma: float = Field(0.5, ge=0.0, le=2.0, description="[γ] relaxation: accept g iff p_M(g) > γ/2 · max p_M.")
    draft_length: int = Field(16, ge=1, le=512, description="[n] tokens per draft.")
    anchor_rule: Literal["nearest", "lm_preferred"] = Field(
        "nearest",
        description="nearest: nearest neighbour whose value is w (paper); lm_preferred: the neighbour "
        "whose value the LM rates highest (official code).",
    )
    acceptance: Literal["relaxed", "lossless"] = Field(
        "relaxed", description="relaxed (paper) or lossless (accept only the LM's own greedy token)."
    )
    ngram_max: int = Field(
        3,
        ge=0,
        le=16,
        description="Longest n-gram of the response's last tokens matched exactly in the request's chunks to "
        "place a copy (decoding.proposer.NgramProposer, the prompt-lookup idea); 0 = kNN anchors only.",
    )
    ngram_min: int = Field(
        2, ge=1, le=16, description="Shortest n-gram that counts as a match (1 = any occurrence of the token)."
    )
    ngram_gate: Literal["auto", "always", "span_mode"] = Field(
        "auto",
        description="When an n-gram match may start a copy: always (also in token mode and right after a "
        "rejected draft), span_mode (only where a kNN anchor could, λ < δ), or auto = always with lossless "
        "acceptance (drafts cannot change its output; measured in benchmarks/bench_context.py) and not at all "
        "with relaxed acceptance (kNN anchors only: the relaxed defaults were chosen on both dev sets without it).",
    )
    history_drafts: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Drafts from the text itself where no chunk n-gram matches: the response's last tokens "
        "matched earlier in the prompt and the response so far (transformers' prompt lookup; "
        "decoding.proposer.HistoryProposer). Such drafts carry no citation; they only save forward passes when "
        "the model repeats its instructions, the question or its own words. auto = on with lossless acceptance "
        "(drafts cannot change its output), off with relaxed acceptance (which would accept repetitions).",
    )
    lm_ends_answer: bool = Field(
        True,
        description="End the answer where the LM alone would: when the LM's own most likely next token is EOS, "
        "EOS is chosen (and no draft token is accepted past it), whatever the mixture says. The kNN "
        "distribution puts no mass on EOS (corpus tokens are never EOS), so without this rule the mixture "
        "postpones the end and answers run on to max_new_tokens. Lossless acceptance ends there anyway.",
    )
    mask_copied: Literal["span", "first", "none"] = Field(
        "span", description="No re-copying: mask every copied entry (paper), only a step's first, or none."
    )
    span_stop: Literal["chunk_end", "sentence_end"] = Field(
        "sentence_end",
        description="Where a copied run ends: at its chunk's end (paper) or after the sentence it "
        "completes, when the LM alone chooses the next token.",
    )
    continue_in_token_mode: bool = Field(
        True,
        description="In token mode (λ ≥ δ), when w is the nearest neighbour's value, draft that "
        "neighbour's continuation in the next forward pass.",
    )
    max_span_tokens: int | None = Field(
        None, ge=1, description="Cap on tokens per copied run (None = no cap)."
    )

    answer_draft: Literal["none", "best_sentence"] = Field(
        "best_sentence",
        description="First draft of an answer: none (the kNN anchor, paper) or best_sentence (the sentence of "
        "the top ra_passages chunks that answer_selection.SentenceRanker scores best: its first token starts "
        "the answer, the LM verifies the rest with answer_gamma).",
    )
    answer_gamma: float | None = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="[γ] relaxation for verifying the answer proposer's sentence (None = gamma; 0 = the "
        "sentence is copied whole unless a span rule cuts it). Lossless acceptance ignores it.",
    )

    # --- faithfulness (NEST.md §10) ---------------------------------------------------------------
    word_boundaries: bool = Field(
        True,
        description="A copied run starts and ends on word boundaries of both its source and the response "
        "(copies that would cut a word are not made; generated letters never extend a copied word).",
    )
    sentence_source: Literal["chunk", "document", "any"] = Field(
        "chunk",
        description="Within one output sentence, copying stays in the chunk (or document) the sentence first "
        "copied from; any = the paper's behaviour (sentences may splice several sources).",
    )
    lock_mixture: bool = Field(
        False,
        description="Also restrict the kNN mixture of a sentence to the entries of its source chunk once it "
        "has copied (not only the copies).",
    )
    min_citation_words: int = Field(
        3, ge=1, le=100, description="Copied spans shorter than this many whole words are not citations."
    )

    # --- answers that stop --------------------------------------------------------------------
    stop_after_cited_sentence: bool = Field(
        True, description="Stop at the end of the first sentence that holds a citation (the copied answer)."
    )
    max_sentences: int | None = Field(
        3, ge=1, description="Stop after this many complete sentences (None = no sentence limit)."
    )

    # --- abstention ---------------------------------------------------------------------------
    abstain: Literal["off", "retrieval", "retrieval+support"] = Field(
        "retrieval",
        description="Answer abstain_message instead of guessing: retrieval = when no sentence of the top "
        "passages is as close to the question as abstain_threshold; retrieval+support = also when the "
        "answer's first sentence is unsupported (its text is then held back until it is judged).",
    )
    abstain_threshold: float = Field(
        0.40,
        ge=-1.0,
        le=2.0,
        description="Least support score (MiniLM cosine of question and sentence + 0.25 x cosine of question and "
        "chunk - 0.25 x the rarest question word the chunk lacks, answer_selection.SUPPORT_WEIGHTS) of the best "
        "sentence of the retrieved chunks for NEST to answer.",
    )
    abstain_message: str = Field(
        "I could not find the answer in the documents.", min_length=1, description="The abstention answer."
    )

    # --- context mode (documents inside the prompt) ------------------------------------------------------
    context_keys: Literal["prefill", "encode"] = Field(
        "prefill",
        description="Context mode: keys of the context chunks from the prompt's own prefill (no second encoding; "
        "each key has seen the whole prompt before it) or from encoding each chunk alone (a datastore's key mode, "
        "NEST.md §2). A chunk the prefill cannot be aligned with is encoded.",
    )

    # --- generation --------------------------------------------------------------------------
    max_new_tokens: int = Field(128, description="Maximum tokens generated (> 0).")
    stop: tuple[str, ...] = Field(
        (), description="Stop strings (not included in the output); a list is accepted and kept as a tuple."
    )
    system_prompt: str | None = Field(
        None, description="System message for chat models (None = the chat template's default)."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_removed_fields(cls, data: Any) -> Any:
        """Drop :data:`REMOVED_FIELDS` from a saved config instead of refusing it (``extra="forbid"``)."""
        if isinstance(data, dict) and not REMOVED_FIELDS.isdisjoint(data):
            return {k: v for k, v in data.items() if k not in REMOVED_FIELDS}
        return data

    @field_validator("max_new_tokens")
    @classmethod
    def _positive_tokens(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("max_new_tokens must be > 0")
        return v

    @field_validator("stop")
    @classmethod
    def _nonempty_stops(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    @model_validator(mode="after")
    def _ngram_range(self) -> NestConfig:
        if self.ngram_max and self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})")
        return self

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenConfigError(
            f"NestConfig is frozen: cannot set {name!r}; make a variant with config.replace({name}=...)"
        )

    def __delattr__(self, name: str) -> None:
        raise FrozenConfigError(f"NestConfig is frozen: cannot delete {name!r}")

    def replace(self, **changes: object) -> NestConfig:
        """A new config with ``changes`` applied, validated like the constructor (this one is unchanged).

        Raises:
            ConfigError: a change names an unknown field or an out-of-range value.
        """
        if not changes:
            return self
        return NestConfig(**{**self.model_dump(), **changes})

    @classmethod
    def lossless(cls, **changes: object) -> NestConfig:
        """The model's own greedy output, token for token, with copies verified and cited.

        ``acceptance="lossless"`` and every answer-level policy that would change what the model says turned
        off: no answer proposer (``answer_draft="none"``), no stopping after the cited sentence or a sentence
        count, no abstention. Copied spans (kNN anchors and n-gram matches) only make it faster and carry the
        citations. ``changes`` apply on top.
        """
        base: dict[str, object] = dict(
            acceptance="lossless",
            answer_draft="none",
            stop_after_cited_sentence=False,
            max_sentences=None,
            abstain="off",
        )
        return cls(**{**base, **changes})

    @property
    def uses_retrieval_in_prompt(self) -> bool:
        """True for the systems that put ``ra_passages`` chunks in the prompt (ra, ra-nest)."""
        return self.method in ("ra", "ra-nest")

    @property
    def uses_token_store(self) -> bool:
        """True for the systems that search the token store while decoding (nest, ra-nest, knnlm)."""
        return self.method in ("nest", "ra-nest", "knnlm")


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return "invalid NestConfig: " + "; ".join(parts)
