"""The result types of NEST, in one place: what an answer is made of.

- :class:`CopiedSpan`: a run of output text copied verbatim from a document, with both character ranges;
- :class:`SentenceSupport`: the support label of one output sentence (NEST.md §10);
- :class:`RetrievedPassage`: a chunk the passage stage returned for a request;
- :class:`GenerationStats`: counters and times of one request;
- :class:`NestResult`: the answer (text, citations, labels, why it stopped, statistics);
- :class:`NestDelta`: one streamed piece of an answer;
- :func:`answer_labels`: what an answer says about itself, as plain JSON values (the adapters' response metadata).

The engine makes them; the views (:mod:`nest_integrations.render`, :mod:`nest_integrations.html`) and the
LangChain / LlamaIndex adapters read them. Nothing here imports torch, transformers or a framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "CopiedSpan",
    "GenerationStats",
    "NestDelta",
    "NestResult",
    "RetrievedPassage",
    "SentenceSupport",
    "Support",
    "answer_labels",
]

#: A sentence's support label (NEST.md §10).
Support = Literal["copied", "grounded", "unsupported"]


@dataclass(frozen=True)
class CopiedSpan:
    """A maximal run of ≥ 2 output tokens that are consecutive tokens of one chunk (NEST.md §8).

    ``response[response_start:response_end] == text`` and, in the original document,
    ``document[doc_start:doc_end] == text``; both hold by construction and are checked when the
    span is made.
    """

    text: str
    doc_id: str
    chunk_id: str
    source: str | None
    doc_start: int
    doc_end: int
    response_start: int
    response_end: int
    n_tokens: int
    metadata: dict[str, Any] | None = None

    def to_dict(self, with_metadata: bool = False) -> dict[str, Any]:
        """JSON-ready dict of the NEST.md §8 fields (plus ``metadata`` when ``with_metadata``)."""
        d = asdict(self)
        if not with_metadata:
            d.pop("metadata")
        return d


@dataclass(frozen=True)
class SentenceSupport:
    """The support label of one output sentence.

    Attributes:
        response_start, response_end: the sentence's character range in the response.
        support: ``copied`` | ``grounded`` | ``unsupported``.
        chunk_ids: the chunk(s) the sentence relies on (one, by construction, for copied / grounded).
    """

    response_start: int
    response_end: int
    support: Support
    chunk_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``response_start``, ``response_end``, ``support``, ``chunk_ids``."""
        return asdict(self)


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
    history_drafts: int = 0  # drafts taken from the text itself (NestConfig.history_drafts; no citation)
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
        """Mean tokens per copied run (0 without runs)."""
        return sum(self.span_lengths) / len(self.span_lengths) if self.span_lengths else 0.0

    @property
    def forwards_per_token(self) -> float:
        """LM forward passes (prefill included) per generated token."""
        return self.forward_passes / self.output_tokens if self.output_tokens else float(self.forward_passes)

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of total time."""
        return self.output_tokens / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the counters, times and derived ratios."""
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
    """The answer: text, citations, sentence support labels, why it stopped, and statistics.

    Attributes:
        text: the answer (the abstention message when ``abstained``).
        spans: the citations — copied spans of at least ``min_citation_words`` words (NEST.md §8).
        finish_reason: ``eos`` | ``stop`` (a stop string) | ``sentence`` (the stop policy: the answer is
            complete) | ``length`` (``max_new_tokens`` reached: the answer is truncated) | ``abstained``.
        token_ids: the generated tokens that make up ``text``.
        stats: counters and times.
        passages: the chunks the passage stage returned.
        sentences: one support label per sentence of ``text`` (NEST.md §10).
        abstained: True when NEST declined to answer (no supporting passage or sentence).
        runs: every copied run, one token or more, before the citation filter (for audits / ``nest eval``).
        relevance: the question's best cosine similarity to a sentence of the top passages (None if
            not computed), the figure the abstention threshold applies to.
        abstain_reason: ``retrieval`` (relevance below the threshold) or ``support`` (the first sentence
            was unsupported) when ``abstained``.
        retrieval_query: the text the passage stage searched with (the condensed query of a conversation).
    """

    text: str
    spans: list[CopiedSpan]
    finish_reason: str
    token_ids: list[int]
    stats: GenerationStats
    passages: list[RetrievedPassage]
    method: str = "nest"
    sentences: list[SentenceSupport] = field(default_factory=list)
    abstained: bool = False
    runs: list[CopiedSpan] = field(default_factory=list)
    relevance: float | None = None
    abstain_reason: str | None = None
    retrieval_query: str | None = None

    @property
    def truncated(self) -> bool:
        """True when the answer was cut by ``max_new_tokens`` rather than ending by itself."""
        return self.finish_reason == "length"

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
            "truncated": self.truncated,
            "abstained": self.abstained,
            "spans": [s.to_dict() for s in self.spans],
            "sentences": [s.to_dict() for s in self.sentences],
            "relevance": self.relevance,
            "abstain_reason": self.abstain_reason,
            "retrieval_query": self.retrieval_query,
            "stats": self.stats.to_dict(),
            "passages": [asdict(p) for p in self.passages],
        }


@dataclass
class NestDelta:
    """One streamed piece: new text, the spans completed within it, and (last delta only) the result."""

    text: str
    spans: list[CopiedSpan]
    result: NestResult | None = None



def answer_labels(result: NestResult) -> dict[str, Any]:
    """What an answer says about itself, as plain JSON values (NEST.md §10).

    ``sentences``: one dict per sentence (``response_start``, ``response_end``, ``support`` in
    copied / grounded / unsupported, ``chunk_ids``); ``abstained``; ``abstain_reason`` (``retrieval``:
    no passage close enough to the question, ``support``: the first sentence was unsupported, or
    ``None``); ``truncated`` (cut by the token limit); ``finish_reason`` (eos, stop, sentence, length
    or abstained); ``relevance`` (the question-passage similarity the abstention threshold applies
    to, or ``None``). Lists hold dicts without an ``index`` key, so LangChain's chunk merging
    concatenates them. Both adapters put this in their response metadata.
    """
    return {
        "sentences": [s.to_dict() for s in result.sentences],
        "abstained": bool(result.abstained),
        "abstain_reason": getattr(result, "abstain_reason", None),
        "truncated": bool(result.truncated),
        "finish_reason": result.finish_reason,
        "relevance": None if result.relevance is None else float(result.relevance),
    }
