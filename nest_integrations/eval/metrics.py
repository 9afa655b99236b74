"""Framework-free metrics for QA and text-completion evaluation.

Everything here is a pure function of strings / numbers (no model, no torch). The third-party
dependencies are ``numpy`` (for :func:`percentile`) and ``rouge-score``, imported lazily by
:func:`rouge1_f`.

Answer metrics
    :func:`normalize_answer`, :func:`exact_match` and :func:`token_f1` follow the official SQuAD v1.1
    evaluation script. :func:`answer_recall` ("does the output contain a gold answer?") and its strict
    variant :func:`answer_recall_strict` (same, on :func:`first_sentence` of the output only) are the
    usual open-domain QA "answer in output" checks, with word boundaries.

Support / attribution
    :func:`supported_share` is a cheap lexical proxy for how much of an output is backed by the
    retrieved knowledge (copied spans or shared n-grams). It is **not** FActScore: it does not split
    the output into atomic facts and does not verify them with a model.
    :func:`attribution_exactness` / :func:`attribution_report` check that every attributed span's
    ``(doc_id, doc_start, doc_end)`` points at exactly the span's text in the original document.

Latency
    :func:`percentile` (``numpy.percentile`` with linear interpolation, its default) and
    :func:`summarize_latencies`.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "AttributionReport",
    "answer_recall",
    "answer_recall_strict",
    "attribution_exactness",
    "attribution_report",
    "exact_match",
    "first_sentence",
    "normalize_answer",
    "percentile",
    "rouge1_f",
    "summarize_latencies",
    "supported_share",
    "token_f1",
]

_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_NON_SPACE_RE = re.compile(r"\S+")


# --------------------------------------------------------------------------------------------------
# Normalisation and sentence splitting
# --------------------------------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 answer normalisation.

    Lower-cases, removes ASCII punctuation (``string.punctuation``), removes the articles
    ``a`` / ``an`` / ``the`` and collapses runs of whitespace into single spaces (also stripping the
    ends). Identical to ``normalize_answer`` in the official SQuAD v1.1 evaluation script.
    """
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _ASCII_PUNCT)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def first_sentence(text: str, max_words: int = 32) -> str:
    """Return the first sentence of ``text``, at most ``max_words`` words.

    The sentence is the first one of :func:`nest_integrations.sentences.split_sentences` — the splitter
    the decoder's span rules and the support labels use (a terminator followed by whitespace ends a
    sentence, except after abbreviations and initials; a line break ends one too; ``"3.5"`` does not).
    It never holds more than the first ``max_words`` whitespace-separated words (the cut is made right
    after the ``max_words``-th word; original spacing inside the kept part is preserved). ``max_words``
    must be at least 1.
    """
    from nest_integrations.sentences import split_sentences

    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    sents = split_sentences(text)
    if not sents:
        return ""
    s = text[sents[0][0] : sents[0][1]]
    for i, word in enumerate(_NON_SPACE_RE.finditer(s), start=1):
        if i == max_words:
            s = s[: word.end()]
            break
    return s.rstrip()


# --------------------------------------------------------------------------------------------------
# Answer metrics
# --------------------------------------------------------------------------------------------------


def _as_answer_list(answers: str | Iterable[str]) -> list[str]:
    """A single gold answer given as a plain string is one answer, not an iterable of characters."""
    if isinstance(answers, str):
        return [answers]
    return list(answers)


def answer_recall(output: str, answers: str | Iterable[str]) -> float:
    """1.0 if any gold answer occurs in ``output``, else 0.0.

    Both sides are normalised with :func:`normalize_answer` and matched as whole words: the
    normalised answer, padded with one space on each side, must be a substring of the normalised
    output padded the same way (so gold ``"24"`` does not match ``"245"``). Answers whose normalised
    form is empty (e.g. ``"the"`` or ``"?"``) are ignored; if no usable answer remains the result is
    0.0. ``answers`` may be one string or an iterable of strings.
    """
    padded_output = f" {normalize_answer(output)} "
    for answer in _as_answer_list(answers):
        norm = normalize_answer(answer)
        if norm and f" {norm} " in padded_output:
            return 1.0
    return 0.0


def answer_recall_strict(output: str, answers: str | Iterable[str]) -> float:
    """:func:`answer_recall` computed on :func:`first_sentence` of ``output`` only."""
    return answer_recall(first_sentence(output), answers)


def _exact_match_single(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1_single(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(output: str, answers: str | Iterable[str]) -> float:
    """SQuAD v1.1 exact match: max over gold answers of ``normalize(output) == normalize(gold)``.

    Returns 1.0 or 0.0; 0.0 when ``answers`` is empty. ``answers`` may be one string or an iterable.
    """
    return max((_exact_match_single(output, a) for a in _as_answer_list(answers)), default=0.0)


def token_f1(output: str, answers: str | Iterable[str]) -> float:
    """SQuAD v1.1 token-level F1: max over gold answers of the bag-of-tokens F1.

    Tokens are the whitespace-split words of :func:`normalize_answer`. As in the official v1.1 script,
    F1 is 0.0 whenever prediction and gold share no token (including when both normalise to empty).
    Returns 0.0 when ``answers`` is empty. ``answers`` may be one string or an iterable.
    """
    return max((_f1_single(output, a) for a in _as_answer_list(answers)), default=0.0)


@lru_cache(maxsize=1)
def _rouge1_scorer() -> Any:
    from rouge_score import rouge_scorer  # local import: only this metric needs rouge-score

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)


def rouge1_f(output: str, reference: str) -> float:
    """ROUGE-1 F1 of ``output`` against ``reference``, via the ``rouge-score`` package.

    Uses ``RougeScorer(["rouge1"], use_stemmer=False)`` (created once and cached). Note that
    rouge-score's default tokenizer lower-cases and keeps only ``[a-z0-9]`` runs, so non-ASCII letters
    are dropped (non-Latin text scores meaninglessly). Returns 0.0 if either side has no tokens.
    """
    return float(_rouge1_scorer().score(reference, output)["rouge1"].fmeasure)


# --------------------------------------------------------------------------------------------------
# Support by knowledge
# --------------------------------------------------------------------------------------------------


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def _norm_word(word: str) -> str:
    return "".join(ch for ch in word.lower() if not _is_punct(ch))


def _words_with_spans(text: str) -> list[tuple[str, int, int]]:
    """Whitespace tokens of ``text`` as ``(normalised word, start, end)``; punctuation-only dropped."""
    out = []
    for m in _NON_SPACE_RE.finditer(text):
        norm = _norm_word(m.group())
        if norm:
            out.append((norm, m.start(), m.end()))
    return out


def supported_share(
    output: str,
    knowledge: str | Iterable[str],
    n: int = 4,
    copied_char_ranges: Iterable[tuple[int, int]] = (),
) -> float:
    """Share (0-1) of the words of ``output`` that are supported by the knowledge.

    Words are the whitespace tokens of ``output``, lower-cased with punctuation removed (ASCII and
    Unicode punctuation; unlike :func:`normalize_answer`, articles are kept); tokens that are pure
    punctuation are not words and are not counted. A word is *supported* if

    * it is **copied**: each of its non-punctuation characters lies inside the union of
      ``copied_char_ranges`` (half-open ``(start, end)`` character ranges into ``output``, e.g. the
      spans NEST copied from the datastore); or
    * it belongs to an ``n``-gram of consecutive output words that also occurs, as consecutive
      words, in the knowledge. ``knowledge`` is one text or an iterable of texts (passages);
      n-grams never cross from one passage to the next.

    Returns ``supported words / words``, and 0.0 for an output without words.

    This is a lexical overlap proxy, **not FActScore**: it neither decomposes the output into atomic
    facts nor checks them with a model; paraphrased true statements score low and copied text that is
    used wrongly scores high.

    Raises:
        ValueError: ``n < 1``, or a copied range with ``start < 0`` or ``end < start``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = _words_with_spans(output)
    if not words:
        return 0.0

    copied = bytearray(len(output))
    for start, end in copied_char_ranges:
        if start < 0 or end < start:
            raise ValueError(f"invalid copied char range ({start}, {end})")
        end = min(end, len(output))
        if start < end:
            copied[start:end] = b"\x01" * (end - start)

    supported = [all(copied[i] or _is_punct(output[i]) for i in range(start, end)) for _, start, end in words]

    passages = [knowledge] if isinstance(knowledge, str) else list(knowledge)
    known: set[tuple[str, ...]] = set()
    for passage in passages:
        kw = [w for w, _, _ in _words_with_spans(passage)]
        known.update(tuple(kw[i : i + n]) for i in range(len(kw) - n + 1))
    if known:
        ow = [w for w, _, _ in words]
        for i in range(len(ow) - n + 1):
            if tuple(ow[i : i + n]) in known:
                supported[i : i + n] = [True] * n

    return sum(supported) / len(words)


# --------------------------------------------------------------------------------------------------
# Attribution exactness
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionReport:
    """Result of :func:`attribution_report`.

    Attributes:
        total: number of spans checked.
        exact: number of spans whose offsets point at exactly their text.
        mismatches: indices (in input order) of the spans that are not exact.
    """

    total: int
    exact: int
    mismatches: tuple[int, ...] = ()

    @property
    def share(self) -> float:
        """``exact / total``; 1.0 when there are no spans."""
        return 1.0 if self.total == 0 else self.exact / self.total


def _span_field(span: Any, name: str) -> Any:
    if isinstance(span, Mapping):
        if name not in span:
            raise KeyError(f"span {span!r} has no field {name!r}")
        return span[name]
    try:
        return getattr(span, name)
    except AttributeError:
        raise AttributeError(f"span {span!r} has no attribute {name!r}") from None


def _is_index(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def attribution_report(spans: Iterable[Any], documents: Mapping[str, str]) -> AttributionReport:
    """Check each span's attribution against the original documents.

    ``spans`` holds dicts or objects with fields ``text``, ``doc_id``, ``doc_start`` and ``doc_end``;
    ``documents`` maps doc_id to the original document text. A span is *exact* iff its ``doc_id`` is in
    ``documents``, ``0 <= doc_start <= doc_end <= len(document)`` (integers; no negative-index
    slicing) and ``documents[doc_id][doc_start:doc_end] == text``. An unknown doc_id counts as not
    exact; a span missing one of the four fields raises ``KeyError`` / ``AttributeError``.
    """
    total = exact = 0
    mismatches: list[int] = []
    for index, span in enumerate(spans):
        text = _span_field(span, "text")
        doc_id = _span_field(span, "doc_id")
        start = _span_field(span, "doc_start")
        end = _span_field(span, "doc_end")
        total += 1
        doc = documents.get(doc_id)
        ok = (
            doc is not None
            and _is_index(start)
            and _is_index(end)
            and 0 <= start <= end <= len(doc)
            and doc[start:end] == text
        )
        if ok:
            exact += 1
        else:
            mismatches.append(index)
    return AttributionReport(total=total, exact=exact, mismatches=tuple(mismatches))


def attribution_exactness(spans: Iterable[Any], documents: Mapping[str, str]) -> float:
    """Share (0-1) of spans whose offsets are exact; 1.0 when there are no spans.

    Shorthand for ``attribution_report(spans, documents).share``; use :func:`attribution_report` for
    the counts and the indices of the failing spans.
    """
    return attribution_report(spans, documents).share


# --------------------------------------------------------------------------------------------------
# Latency summaries
# --------------------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (``0 <= q <= 100``) of ``values`` with linear interpolation.

    ``numpy.percentile(values, q, method="linear")``: sort the values, take the fractional rank
    ``(len - 1) * q / 100`` and interpolate between its neighbours.

    Raises:
        ValueError: no values, a NaN value, or ``q`` outside ``[0, 100]``.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        raise ValueError("percentile of an empty sequence")
    if np.isnan(data).any():
        raise ValueError("percentile of a sequence containing NaN")
    return float(np.percentile(data, q, method="linear"))


def summarize_latencies(values: Iterable[float]) -> dict[str, float]:
    """``{"mean": ..., "p50": ..., "p90": ...}`` of ``values`` (e.g. seconds per request).

    Percentiles as in :func:`percentile`. Raises ``ValueError`` for an empty input or NaN values.
    """
    data: Sequence[float] = [float(v) for v in values]
    if not data:
        raise ValueError("summarize_latencies of an empty sequence")
    return {
        "mean": math.fsum(data) / len(data),
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
    }
