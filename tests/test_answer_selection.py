"""Answer proposer's sentence chooser (nest_integrations.answer_selection); a fake encoder, no model download."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from nest_integrations.answer_selection import (
    DEFAULT_WEIGHTS,
    SUPPORT_WEIGHTS,
    SentenceRanker,
    idf_table,
    is_text_task,
    sentence_features,
)
from nest_integrations.sentences import split_sentences


@dataclass
class _Chunk:
    text: str


class _BagEncoder:
    """Unit-norm bag-of-letters vectors: similar texts get similar embeddings."""

    def encode(self, texts, **_: object) -> np.ndarray:
        out = np.zeros((len(texts), 26), np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


CORPUS = [
    "Super Bowl 50 was an American football game. The Super Bowl 50 halftime show was headlined by Coldplay.",
    "Super Bowl 50 was played in Santa Clara. Lady Gaga performed the national anthem before the game.",
    "Super Bowl 50 tickets were expensive. The Super Bowl 50 game was broadcast by CBS.",
]


def test_idf_rare_words_weigh_more() -> None:
    idf = idf_table(CORPUS)
    assert idf["anthem"] > idf["bowl"] > 0
    assert idf["super"] == pytest.approx(idf["bowl"])  # same document frequency


def test_features_cover_every_sentence_with_offsets() -> None:
    chunks = [(_Chunk(t), 0.5) for t in CORPUS]
    rows = sentence_features("Who performed the national anthem?", chunks, encoder=_BagEncoder(), idf=idf_table(CORPUS))
    assert len(rows) == sum(len(split_sentences(t)) for t in CORPUS)
    for r in rows:
        assert CORPUS[r["chunk"]][r["start"] : r["end"]] == r["text"]
        assert 0.0 <= r["idf_cov"] <= 1.0 and 0.0 <= r["idf2_cov"] <= 1.0 and 0.0 <= r["bigram"] <= 1.0
    gaga = next(r for r in rows if "Gaga" in r["text"])
    assert gaga["idf_cov"] == pytest.approx(1.0) and gaga["bigram"] > 0 and gaga["type_match"] == 1.0


@pytest.mark.parametrize(
    ("question", "yes", "no"),
    [
        ("How many people attended?", "About 70,000 people attended.", "Many people attended."),
        ("When was the game played?", "The game was played in 2016.", "The game was played at night."),
        ("Who sang the anthem?", "The anthem was sung by Lady Gaga.", "The anthem was sung by a singer."),
    ],
)
def test_answer_type_match(question: str, yes: str, no: str) -> None:
    rows = sentence_features(question, [(_Chunk(yes), 0.0), (_Chunk(no), 0.0)], encoder=_BagEncoder())
    assert [r["type_match"] for r in rows] == [1.0, 0.0]


def test_ranker_prefers_the_answering_sentence_over_the_topic_sentence() -> None:
    # the top chunk repeats the question's topic words; the third one answers it
    chunks = [(_Chunk(t), s) for t, s in zip(CORPUS, (0.6, 0.55, 0.5), strict=True)]
    ranker = SentenceRanker(_BagEncoder(), idf=idf_table(CORPUS))
    ranked, support = ranker.rank("Who performed the national anthem at Super Bowl 50?", chunks)
    best = ranked[0]
    assert CORPUS[best.chunk][best.start : best.end] == "Lady Gaga performed the national anthem before the game."
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    expected = max(sum(w * r.features[k] for k, w in SUPPORT_WEIGHTS.items()) for r in ranked)
    assert support == pytest.approx(expected)
    assert set(DEFAULT_WEIGHTS) <= set(best.features)


def test_precomputed_embeddings_give_the_same_ranking() -> None:
    enc = _BagEncoder()
    chunks = [(_Chunk(t), 0.5) for t in CORPUS]
    embs = [enc.encode([t[a:b] for a, b in split_sentences(t)]) for t in CORPUS]
    ranker = SentenceRanker(enc, idf=idf_table(CORPUS))
    q = "Who performed the national anthem?"
    a, sa = ranker.rank(q, chunks)
    b, sb = ranker.rank(q, chunks, embs)
    assert [(r.chunk, r.start) for r in a] == [(r.chunk, r.start) for r in b] and sa == pytest.approx(sb)
    with pytest.raises(ValueError, match="embeddings hold"):
        ranker.rank(q, chunks, embs[:2])


def test_no_sentences_no_candidates() -> None:
    ranked, support = SentenceRanker(_BagEncoder()).rank("Who?", [(_Chunk("   "), 0.1)])
    assert ranked == [] and support == -1.0


@pytest.mark.parametrize(
    "request_text, task",
    [
        ("Summarize this article.", True),
        ("summarise the text above", True),
        ("Rewrite: the report in plain words", True),
        ("What does the article summarize?", False),
        ("who wrote the song diamonds and rust", False),
        ("Tell me a bio of Ada Lovelace.", False),
        ("", False),
    ],
)
def test_text_tasks_are_told_from_questions(request_text: str, task: bool) -> None:
    assert is_text_task(request_text) is task
