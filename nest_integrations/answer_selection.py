"""Choosing the sentence of the retrieved chunks that answers a question (the answer proposer's draft).

RA-NEST's first draft is a whole sentence of a retrieved chunk (``NestConfig.answer_draft``); which sentence
decides most of what the answer says. :class:`SentenceRanker` scores every sentence of the top chunks with
a linear score over a few features that carry across question styles (chosen on the mean of both dev sets,
``benchmarks/answer_sentence_study.py``):

* ``cos`` — MiniLM cosine between question and sentence;
* ``idf_cov`` — share of the question's content words (IDF-weighted over the corpus) the sentence holds;
  ``idf2_cov`` the same with squared IDF weights (rare words count more); ``bigram`` — share of the
  question's word pairs (not both stop words) found in the sentence;
* ``type_match`` — the sentence holds the kind of thing the question asks for (a number for "how many",
  a year or date for "when", a capitalised name not in the question for "who"/"where");
* ``qlik`` — mean log-likelihood per token of the question given the sentence under the LM (UPR,
  Sachan et al., 2022, "Improving Passage Retrieval with Zero-Shot Question Generation");
* ``first``, ``rank_inv``, ``chunk_score``, ``long`` — position priors (first sentence of its chunk,
  1 / (chunk rank + 1), MiniLM cosine between question and the whole chunk, longer than 32 words);
* ``chunk_cov2`` — ``idf2_cov`` of the sentence's whole chunk; ``chunk_miss`` — the highest IDF of a question
  content word the chunk lacks, over the highest IDF of any (0 when the chunk holds them all).

The best score is also the abstention criterion: a question whose best sentence scores below
``abstain_threshold`` is answered with ``abstain_message``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nest_integrations.sentences import split_sentences

__all__ = [
    "DEFAULT_WEIGHTS",
    "SUPPORT_WEIGHTS",
    "TEXT_TASK_VERBS",
    "RankedSentence",
    "SentenceRanker",
    "idf_table",
    "is_text_task",
    "sentence_features",
]

#: Weights of the shipped answer chooser (see the module docstring for the features): the best mean strict
#: recall of the chosen sentence over squad-dev200 and nq-dev200 in ``benchmarks/answer_sentence_study.py fit``.
DEFAULT_WEIGHTS: Mapping[str, float] = {"idf2_cov": 0.25, "bigram": 0.1, "type_match": 0.3, "chunk_score": 0.5}
#: Weights of the support score (the abstention criterion: its maximum over the candidate sentences),
#: chosen in the same study (``support``) as the best separation of answerable from unanswerable questions
#: with ONE threshold for both sets: most unanswerable abstentions on the worse set, at most 10% answerable.
SUPPORT_WEIGHTS: Mapping[str, float] = {"cos": 1.0, "chunk_score": 0.25, "chunk_miss": -0.25}

_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*", re.UNICODE)
_STOP = frozenset(
    """a an the of in on at to for from by with and or but is are was were be been being do does did has have had
    what which who whom whose when where why how that this these those it its as into than then there their they
    he she his her him them we you your i me my our us not no yes if so such can could would should will may might
    about after before during over under between also name named called first last one many much long old year
    years date time type kind""".split()
)
_MONTHS = frozenset("january february march april may june july august september october november december".split())
_NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve hundred thousand million billion dozen".split()
)


# imperative verbs of requests that transform the given text instead of asking a question of it
TEXT_TASK_VERBS = frozenset(
    "summarize summarise rewrite paraphrase translate shorten condense simplify rephrase proofread".split()
)


def is_text_task(request: str) -> bool:
    """Whether ``request`` asks to transform the given text ("Summarize this article.", "Rewrite ...") rather
    than to answer a question from it.

    Abstention, the best-sentence answer proposer and the answer's sentence limit judge how well the
    documents answer a question; a text task has no question to answer, so the engine turns them off for it
    (the output is still copied from the documents, with citations). Only the first word counts, compared
    with :data:`TEXT_TASK_VERBS` (so "What does the article summarize?" is a question)."""
    words = _words(request.strip().lower()[:64])
    return bool(words) and words[0] in TEXT_TASK_VERBS


def _words(text: str) -> list[str]:
    return [m.group(0) for m in _WORD.finditer(text)]


def _content(words: Iterable[str]) -> list[str]:
    return [w.lower() for w in words if w.lower() not in _STOP]


def idf_table(texts: Sequence[str]) -> dict[str, float]:
    """Inverse document frequency ``log(1 + N / df)`` of every lower-cased word of ``texts``."""
    df: Counter[str] = Counter()
    for t in texts:
        df.update({w.lower() for w in _words(t)})
    n = max(len(texts), 1)
    return {w: math.log(1.0 + n / c) for w, c in df.items()}


def _answer_type(question: str) -> str | None:
    q = question.lower()
    if re.search(
        r"\bhow (many|much|long|old|far|big|large|tall|high|deep)\b|\bwhat (percentage|number)\b|\bnumber of\b", q
    ):
        return "number"
    if re.search(r"\bwhen\b|\b(what|which|in what) (year|date|century|decade|month|day)\b", q):
        return "date"
    if re.search(r"\b(who|whom|whose)\b", q):
        return "name"
    if re.search(r"\bwhere\b", q):
        return "name"
    return None


def _type_match(kind: str | None, sentence: str, question_words: set[str]) -> float:
    if kind is None:
        return 0.0
    words = _words(sentence)
    if kind == "number":
        return float(any(any(ch.isdigit() for ch in w) or w.lower() in _NUMBER_WORDS for w in words))
    if kind == "date":
        return float(
            any(
                re.fullmatch(r"1\d{3}|20\d{2}|\d{1,4}s", w) or w.lower() in _MONTHS or w.lower() == "century"
                for w in words
            )
        )
    # a capitalised word, not the sentence's first word, not in the question
    return float(any(w[:1].isupper() and w.lower() not in question_words and w.lower() not in _STOP for w in words[1:]))


@dataclass(frozen=True)
class RankedSentence:
    """One candidate sentence: which chunk (position in the list given), where in its text, and its score."""

    chunk: int
    start: int
    end: int
    score: float
    features: Mapping[str, float]


def sentence_features(
    question: str,
    chunks: Sequence[tuple[Any, float]],
    *,
    encoder: Any,
    lm: Any | None = None,
    idf: Mapping[str, float] | None = None,
    with_text: bool = True,
    embeddings: Sequence[Any] | None = None,
    query_embedding: Any | None = None,
) -> list[dict[str, Any]]:
    """Feature dicts of every sentence of ``chunks`` (``(chunk, MiniLM cosine of question and chunk)``
    pairs, best first).

    Each dict holds ``chunk`` (index into ``chunks``), ``start``/``end`` (characters in the chunk text),
    the features of the module docstring and, with ``with_text``, the sentence ``text``. ``qlik`` is 0
    when ``lm`` is None. ``embeddings``: per chunk, the (n_sentences, d) unit-norm encoder embeddings of its
    sentences in :func:`~nest_integrations.sentences.split_sentences` order (computed when None);
    ``query_embedding``: the (d,) unit-norm embedding of ``question`` (computed when None).
    """
    import numpy as np

    q_words = _words(question)
    q_set = {w.lower() for w in q_words}
    q_content = list(dict.fromkeys(_content(q_words)))
    idf = idf or {}
    q_weight = {w: idf.get(w, 1.0) for w in q_content}
    kind = _answer_type(question)
    q_low = [w.lower() for w in q_words]
    q_bigrams = {b for b in zip(q_low, q_low[1:], strict=False) if not (b[0] in _STOP and b[1] in _STOP)}
    out: list[dict[str, Any]] = []
    total2 = sum(v * v for v in q_weight.values())
    max_w = max(q_weight.values(), default=0.0)
    for ci, (chunk, score) in enumerate(chunks):
        text = chunk.text
        c_set = {w.lower() for w in _words(text)}
        chunk_cov2 = sum(v * v for w, v in q_weight.items() if w in c_set) / total2 if total2 else 0.0
        chunk_miss = max((v for w, v in q_weight.items() if w not in c_set), default=0.0) / max_w if max_w else 0.0
        for pos, (st, en) in enumerate(split_sentences(text)):
            s = text[st:en]
            s_set = {w.lower() for w in _words(s)}
            total = sum(q_weight.values())
            cov = sum(v for w, v in q_weight.items() if w in s_set) / total if total else 0.0
            cov2 = sum(v * v for w, v in q_weight.items() if w in s_set) / total2 if total2 else 0.0
            s_low = [w.lower() for w in _words(s)]
            s_bigrams = set(zip(s_low, s_low[1:], strict=False))
            bigram = sum(1 for b in q_bigrams if b in s_bigrams) / len(q_bigrams) if q_bigrams else 0.0
            n_words = len(s.split())
            row: dict[str, Any] = {
                "chunk": ci,
                "start": st,
                "end": en,
                "pos": pos,
                "rank": ci,
                "first": float(pos == 0),
                "rank_inv": 1.0 / (ci + 1),
                "chunk_score": float(score),
                "idf_cov": cov,
                "idf2_cov": cov2,
                "bigram": bigram,
                "type_match": _type_match(kind, s, q_set),
                "long": float(n_words > 32),
                "chunk_cov2": chunk_cov2,
                "chunk_miss": chunk_miss,
            }
            if with_text:
                row["text"] = s
            out.append(row)
    if not out:
        return out
    texts = [chunks[r["chunk"]][0].text[r["start"] : r["end"]] for r in out]
    if embeddings is None:
        emb = encoder.encode(
            texts + [question], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        sims = np.asarray(emb[:-1]) @ np.asarray(emb[-1])
    else:
        q = query_embedding
        if q is None:
            q = encoder.encode([question], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)[0]
        sims = np.concatenate([np.asarray(e, dtype=np.float32).reshape(-1, len(q)) @ q for e in embeddings])
        if len(sims) != len(out):
            raise ValueError(f"embeddings hold {len(sims)} sentences, the chunks {len(out)}")
    for r, c in zip(out, sims, strict=True):
        r["cos"] = float(c)
    if lm is not None:
        for r, ll in zip(out, question_likelihood(lm, texts, question), strict=True):
            r["qlik"] = ll
    else:
        for r in out:
            r["qlik"] = 0.0
    return out


def question_likelihood(lm: Any, sentences: Sequence[str], question: str, batch_size: int = 16) -> list[float]:
    """Mean log P(question token | ``Passage: <sentence>\\nQuestion:``) per sentence under ``lm``.

    One padded forward pass per batch of ``batch_size`` sentences; returns one float per sentence.
    """
    import torch

    tok = lm.tokenizer
    target = tok(" " + question.strip(), add_special_tokens=False)["input_ids"][:64]
    if not target:
        return [0.0] * len(sentences)
    seqs = []
    for s in sentences:
        ctx = tok(f"Passage: {s.strip()}\nQuestion:", add_special_tokens=False)["input_ids"][-192:]
        seqs.append((ctx, ctx + target))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[float] = []
    device = lm.device
    for b in range(0, len(seqs), batch_size):
        chunk = seqs[b : b + batch_size]
        width = max(len(full) for _, full in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (_, full) in enumerate(chunk):
            ids[i, : len(full)] = torch.tensor(full)
            mask[i, : len(full)] = 1
        with torch.no_grad():
            logits = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        t = torch.tensor(target)
        for i, (ctx, _) in enumerate(chunk):
            rows = logp[i, len(ctx) - 1 : len(ctx) - 1 + len(target)].cpu()
            out.append(float(rows.gather(1, t[:, None]).mean()))
    return out


class SentenceRanker:
    """Scores the sentences of retrieved chunks as answers to a question (linear scores over features).

    Args:
        encoder: a sentence-transformers style encoder (``encode(texts, normalize_embeddings=True)``).
        idf: word → IDF over the corpus (:func:`idf_table`); words not in it weigh 1.
        weights: feature → weight of the answer score (default :data:`DEFAULT_WEIGHTS`).
        support_weights: feature → weight of the support score (default :data:`SUPPORT_WEIGHTS`).
        lm: the loaded LM, used only when a weight names ``qlik``.
    """

    def __init__(
        self,
        encoder: Any,
        idf: Mapping[str, float] | None = None,
        weights: Mapping[str, float] | None = None,
        support_weights: Mapping[str, float] | None = None,
        lm: Any | None = None,
    ) -> None:
        self.encoder = encoder
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.support_weights = dict(SUPPORT_WEIGHTS if support_weights is None else support_weights)
        self.lm = lm if (self.weights.get("qlik") or self.support_weights.get("qlik")) else None
        self.idf = idf

    def rank(
        self,
        question: str,
        chunks: Sequence[tuple[Any, float]],
        embeddings: Sequence[Any] | None = None,
        query_embedding: Any | None = None,
    ) -> tuple[list[RankedSentence], float]:
        """(candidate sentences of ``chunks`` best first, support score of the question).

        ``chunks``: ``(chunk, MiniLM cosine of question and chunk)`` pairs, best first; ``embeddings`` and
        ``query_embedding`` as in :func:`sentence_features`. The support score is the best support score of any candidate
        (-1.0 when the chunks hold no sentence).
        """
        rows = sentence_features(
            question,
            chunks,
            encoder=self.encoder,
            lm=self.lm,
            idf=self.idf,
            with_text=False,
            embeddings=embeddings,
            query_embedding=query_embedding,
        )
        ranked = []
        support = -1.0
        for r in rows:
            score = sum(w * float(r.get(k, 0.0)) for k, w in self.weights.items())
            support = max(support, sum(w * float(r.get(k, 0.0)) for k, w in self.support_weights.items()))
            feats = {k: float(v) for k, v in r.items() if k not in ("chunk", "start", "end")}
            ranked.append(RankedSentence(int(r["chunk"]), int(r["start"]), int(r["end"]), score, feats))
        ranked.sort(key=lambda s: -s.score)
        return ranked, support
