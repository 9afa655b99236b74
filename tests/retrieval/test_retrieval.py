"""Tests of the passage stage: NEST fusion math, dense / BM25 / hybrid retrievers, recall on real data."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

from nest_integrations.errors import ConfigError, EmptyCorpusError, EmptyQuestionError
from nest_integrations.retrieval import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    PassageRetriever,
    ScoredChunk,
    fuse_scores,
    load_sentence_encoder,
    make_retriever,
)
from nest_integrations.retrieval.base import top_k_indices
from nest_integrations.retrieval.hybrid import sharpness

TOY = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Great Wall of China was built over many centuries.",
    "Mount Everest is the highest mountain above sea level.",
    "Paris is the capital and most populous city of France.",
]


def shared_data_dir() -> Path | None:
    """The shared data folder: $NEST_SHARED_DATA, else <repo>/../shared/data; None when absent."""
    env = os.environ.get("NEST_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def indices(hits: list[ScoredChunk]) -> list[int]:
    return [h.index for h in hits]


# --------------------------------------------------------------------------------------------------
# fusion math (pure, no models)
# --------------------------------------------------------------------------------------------------


def test_fuse_short_lists_and_missing_chunks_by_hand() -> None:
    # Lists shorter than 101 -> "rank 101" = last score. Chunk 2 is missing from sparse, chunk 3 from dense.
    dense = {0: 0.9, 1: 0.5, 2: -0.2}
    sparse = {1: 10.0, 3: 4.0, 0: 2.0}
    # eta_dense: clipped [0.9, 0.5, 0.0] -> 1 - 0/0.9 = 1 ; eta_sparse: 1 - 2/10 = 0.8
    # eta = 0.7 * (1 - 0.8) + 0.3 * 1 = 0.44 ; missing -> dense min -0.2 (raw), sparse min 2.0
    expected = {
        1: 0.44 * 0.5 + 0.56 * 10.0,  # 5.82
        3: 0.44 * -0.2 + 0.56 * 4.0,  # 2.152
        0: 0.44 * 0.9 + 0.56 * 2.0,  # 1.516
        2: 0.44 * -0.2 + 0.56 * 2.0,  # 1.032
    }
    assert sharpness(list(dense.values()), clip_at_zero=True) == pytest.approx(1.0)
    assert sharpness(list(sparse.values())) == pytest.approx(0.8)
    hits = fuse_scores(dense, sparse, k=3)
    assert indices(hits) == [1, 3, 0]
    for h in hits:
        assert h.score == pytest.approx(expected[h.index])
    assert fuse_scores(dense, sparse, k=10)[-1] == ScoredChunk(2, pytest.approx(1.032))


def test_fuse_uses_rank_101_on_long_lists() -> None:
    dense = {i: 1.0 - i / 200.0 for i in range(150)}  # sorted: rank 101 = 0.5, max 1.0
    sparse = {i: float(i) for i in range(50, 200)}  # sorted: 199 .. 50, rank 101 = 99, max 199
    eta_dense, eta_sparse = 0.5, 100.0 / 199.0
    assert sharpness(list(dense.values()), clip_at_zero=True) == pytest.approx(eta_dense)
    assert sharpness(list(sparse.values())) == pytest.approx(eta_sparse)
    eta = 0.7 * (1.0 - eta_sparse) + 0.3 * eta_dense
    dense_min, sparse_min = 1.0 - 149 / 200.0, 50.0
    expected = {i: eta * dense.get(i, dense_min) + (1.0 - eta) * sparse.get(i, sparse_min) for i in range(200)}
    want = sorted(expected, key=lambda i: (-expected[i], i))[:7]
    hits = fuse_scores(dense, sparse, k=7)
    assert indices(hits) == want == [199, 198, 197, 196, 195, 194, 193]
    assert hits[0].score == pytest.approx(eta * dense_min + (1 - eta) * 199.0)


def test_fuse_zero_over_zero_guard() -> None:
    # every BM25 score 0 (no query term known): eta_sparse := 0, ranking = dense ranking
    dense = {0: 0.2, 1: 0.8, 2: 0.5}
    sparse = {0: 0.0, 1: 0.0, 2: 0.0}
    assert sharpness(list(sparse.values())) == 0.0
    eta = 0.7 * 1.0 + 0.3 * (1.0 - 0.2 / 0.8)  # 0.925
    hits = fuse_scores(dense, sparse, k=3)
    assert indices(hits) == [1, 2, 0]
    assert [h.score for h in hits] == pytest.approx([eta * 0.8, eta * 0.5, eta * 0.2])
    # both lists all zero / dense all negative: still finite, ties by index
    for d in ({0: 0.0, 1: 0.0, 2: 0.0}, {0: -0.1, 1: -0.3, 2: -0.1}):
        assert sharpness(list(d.values()), clip_at_zero=True) == 0.0
        hits = fuse_scores(d, sparse, k=3)
        assert all(math.isfinite(h.score) for h in hits)
    assert indices(fuse_scores({0: 0.0, 1: 0.0, 2: 0.0}, sparse, k=3)) == [0, 1, 2]
    # eta = 0.7 with dense all negative: fused = 0.7 * dense
    assert indices(fuse_scores({0: -0.1, 1: -0.3, 2: -0.1}, sparse, k=3)) == [0, 2, 1]
    # empty list: contributes 0, its eta is 0
    assert fuse_scores({}, {1: 2.0}, k=3) == [ScoredChunk(1, pytest.approx(0.3 * 2.0))]
    assert fuse_scores({}, {}, k=3) == []


def test_fuse_ties_clamping_and_bad_k() -> None:
    a = fuse_scores({2: 0.5, 1: 0.5, 0: 0.5}, {}, k=2)
    b = fuse_scores({0: 0.5, 1: 0.5, 2: 0.5}, {}, k=2)
    assert a == b and indices(a) == [0, 1]
    assert len(fuse_scores({0: 1.0}, {1: 1.0, 2: 3.0}, k=100)) == 3
    assert fuse_scores({0: 1.0}, {1: 1.0}, k=0) == []
    with pytest.raises(ConfigError):
        fuse_scores({0: 1.0}, {1: 1.0}, k=-1)


def test_top_k_indices_breaks_ties_by_index_at_the_cut() -> None:
    s = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0])
    assert top_k_indices(s, 3).tolist() == [1, 3, 2]
    assert top_k_indices(s, 4).tolist() == [1, 3, 2, 4]
    assert top_k_indices(s, 99).tolist() == [1, 3, 2, 4, 5, 0, 6]
    assert top_k_indices(s, 0).tolist() == []


# --------------------------------------------------------------------------------------------------
# retrievers on a toy corpus (real encoder)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy() -> dict[str, PassageRetriever]:
    dense = DenseRetriever(TOY)
    sparse = BM25Retriever(TOY)
    return {"dense": dense, "bm25": sparse, "hybrid": HybridRetriever(dense, sparse)}


def test_protocol_and_basic_ranking(toy: dict[str, PassageRetriever]) -> None:
    for name, r in toy.items():
        assert isinstance(r, PassageRetriever), name
        assert len(r) == len(TOY)
        hits = r.retrieve("What is the capital of France?", 2)
        assert 4 in indices(hits), (name, hits)
        assert all(isinstance(h.index, int) and isinstance(h.score, float) for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    dense = toy["dense"]
    assert isinstance(dense, DenseRetriever)
    assert dense.embeddings.shape == (len(TOY), 384) and dense.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(dense.embeddings, axis=1), 1.0, atol=1e-5)
    assert all(-1.0 - 1e-5 <= h.score <= 1.0 + 1e-5 for h in dense.retrieve("tower", 5))


def test_k_is_clamped(toy: dict[str, PassageRetriever]) -> None:
    for name, r in toy.items():
        hits = r.retrieve("highest mountain", 100)
        assert sorted(indices(hits)) == list(range(len(TOY))), name
        assert r.retrieve("highest mountain", 0) == []
        with pytest.raises(ConfigError):
            r.retrieve("highest mountain", -1)


def test_empty_query_raises(toy: dict[str, PassageRetriever]) -> None:
    for r in toy.values():
        for q in ("", "   \n\t"):
            with pytest.raises(EmptyQuestionError):
                r.retrieve(q, 3)


def test_query_without_known_terms(toy: dict[str, PassageRetriever]) -> None:
    # BM25: documented behaviour = k chunks, all score 0, in index order.
    hits = toy["bm25"].retrieve("zyxwv qqqqj the of", 3)
    assert hits == [ScoredChunk(0, 0.0), ScoredChunk(1, 0.0), ScoredChunk(2, 0.0)]
    # hybrid: eta_sparse = 0 -> ranking = dense ranking
    q = "zyxwv qqqqj the of"
    assert indices(toy["hybrid"].retrieve(q, 5)) == indices(toy["dense"].retrieve(q, 5))


def test_determinism_and_reload_from_embeddings(toy: dict[str, PassageRetriever]) -> None:
    q = "Where is the Eiffel Tower?"
    for r in toy.values():
        assert r.retrieve(q, 5) == r.retrieve(q, 5)
    dense = toy["dense"]
    assert isinstance(dense, DenseRetriever)
    again = DenseRetriever(TOY)
    np.testing.assert_array_equal(again.embeddings, dense.embeddings)
    reloaded = DenseRetriever.from_embeddings(dense.embeddings.copy())
    assert reloaded.retrieve(q, 5) == dense.retrieve(q, 5)
    assert BM25Retriever(TOY).retrieve(q, 5) == toy["bm25"].retrieve(q, 5)
    hybrid2 = HybridRetriever(reloaded, BM25Retriever(TOY))
    assert hybrid2.retrieve(q, 5) == toy["hybrid"].retrieve(q, 5)


def test_construction_errors() -> None:
    with pytest.raises(EmptyCorpusError):
        BM25Retriever([])
    with pytest.raises(EmptyCorpusError):
        BM25Retriever(["", "  "])
    with pytest.raises(EmptyCorpusError):
        DenseRetriever([])
    with pytest.raises(ConfigError):
        HybridRetriever(DenseRetriever.from_embeddings(np.eye(3, 384, dtype=np.float32)), BM25Retriever(TOY))
    with pytest.raises(ConfigError):
        make_retriever(TOY, "tfidf")  # type: ignore[arg-type]


def test_make_retriever_kinds() -> None:
    assert isinstance(make_retriever(TOY, "bm25"), BM25Retriever)
    assert isinstance(make_retriever(TOY, "dense"), DenseRetriever)
    assert isinstance(make_retriever(TOY), DenseRetriever)  # the default: best on the mean of both dev sets
    hybrid = make_retriever(TOY, "hybrid")
    assert isinstance(hybrid, HybridRetriever) and len(hybrid) == len(TOY) and hybrid.fusion == "paper"
    rrf = make_retriever(TOY, "rrf")
    assert isinstance(rrf, HybridRetriever) and rrf.fusion == "rrf"
    assert load_sentence_encoder() is load_sentence_encoder()  # cached


# --------------------------------------------------------------------------------------------------
# real data: recall@3 on the first 60 squad-dev200 questions
# --------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_recall_at_3_on_squad_dev() -> None:
    data = shared_data_dir()
    if data is None or not (data / "squad-dev200" / "corpus.jsonl").is_file():
        pytest.skip("shared data (squad-dev200) not found; set NEST_SHARED_DATA")
    corpus = _read_jsonl(data / "squad-dev200" / "corpus.jsonl")
    questions = _read_jsonl(data / "squad-dev200" / "questions.jsonl")[:60]
    ids = [c["id"] for c in corpus]
    texts = [f"{c['title']}\n{c['text']}" for c in corpus]  # a chunk = its article title + paragraph

    t0 = time.perf_counter()
    dense = DenseRetriever(texts)
    t1 = time.perf_counter()
    sparse = BM25Retriever(texts)
    t2 = time.perf_counter()
    retrievers: dict[str, PassageRetriever] = {
        "dense": dense,
        "bm25": sparse,
        "hybrid": HybridRetriever(dense, sparse),
    }
    print(f"\nbuild on {len(texts)} chunks: dense {t1 - t0:.2f} s, bm25 {t2 - t1:.3f} s")
    recall = {}
    for name, r in retrievers.items():
        t = time.perf_counter()
        hit = sum(
            bool({ids[h.index] for h in r.retrieve(q["question"], 3)} & set(q["gold_passage_ids"])) for q in questions
        )
        ms = (time.perf_counter() - t) / len(questions) * 1000
        recall[name] = hit / len(questions)
        print(f"recall@3 {name:6s} = {recall[name]:.3f}  ({ms:.1f} ms/query)")
    assert recall["hybrid"] >= 0.9
    assert recall["dense"] >= 0.9 and recall["bm25"] >= 0.85


def test_rrf_scores_rank_by_reciprocal_ranks() -> None:
    from nest_integrations.retrieval.hybrid import RRF_K, rrf_scores

    dense = {0: 0.9, 1: 0.5, 2: 0.1}
    sparse = {2: 30.0, 1: 20.0}  # scales do not matter, only ranks
    hits = rrf_scores(dense, sparse, 3, dense_weight=0.8)
    expect = {
        0: 0.8 / (RRF_K + 1),
        1: 0.8 / (RRF_K + 2) + 0.2 / (RRF_K + 2),
        2: 0.8 / (RRF_K + 3) + 0.2 / (RRF_K + 1),
    }
    assert [h.index for h in hits] == sorted(expect, key=lambda i: -expect[i])
    assert all(abs(h.score - expect[h.index]) < 1e-12 for h in hits)
    assert [h.index for h in rrf_scores(dense, sparse, 3, dense_weight=0.0)] == [2, 1, 0]

