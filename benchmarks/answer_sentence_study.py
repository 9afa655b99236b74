"""Which sentence of the retrieved chunks answers the question? Features for the answer proposer (no decoding).

    python benchmarks/answer_sentence_study.py dump --out .cache/answer-sentences   # features, ~10 min on 2 cores
    python benchmarks/answer_sentence_study.py fit --cache .cache/answer-sentences  # scorers, instant
    python benchmarks/answer_sentence_study.py support --cache .cache/answer-sentences  # abstention scores

``dump`` retrieves the top ``ra_passages`` chunks (the default dense retriever) for every question of both
dev sets, answerable and unanswerable variant (``nest eval --unanswerable``), splits them with the shared
sentence splitter and records, per sentence: MiniLM cosine to the question, the chunk's rank and score,
position, IDF-weighted question-term coverage, answer-type match, and the default LM's question likelihood
given the sentence (UPR, Sachan et al. 2022). The label is strict recall of the sentence alone (a gold answer
in its first 32 words) — what the answer proposer wins when it copies that sentence.

``fit`` compares sentence choosers on the mean over both sets: passage-dump (first sentence of the top
chunk), MiniLM argmax (the shipped chooser), and linear scores over the features (weights chosen on the
mean of both sets), plus abstention separability (answerable vs unanswerable) of each chooser's best score.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

SETS = ("squad-dev200", "nq-dev200")


def dump(args: argparse.Namespace) -> None:
    from nest_integrations.answer_selection import idf_table, sentence_features
    from nest_integrations.chunks import chunks_from_documents
    from nest_integrations.config import NestConfig
    from nest_integrations.eval.data import read_corpus, read_items, unanswerable_variant
    from nest_integrations.eval.metrics import answer_recall_strict
    from nest_integrations.models import load_model
    from nest_integrations.retrieval import DenseRetriever, load_sentence_encoder

    cfg = NestConfig()
    enc = load_sentence_encoder()
    lm = None if args.no_lm else load_model(dtype="bfloat16")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        t0 = time.perf_counter()
        docs = read_corpus(Path(args.data) / name / "corpus.jsonl")
        _, items = read_items(Path(args.data) / name / "questions.jsonl")
        chunks = chunks_from_documents(docs)
        dense = DenseRetriever([c.text for c in chunks])
        idf = idf_table([c.text for c in chunks])
        rows = []
        for variant, its in (("answerable", items), ("unanswerable", unanswerable_variant(items, docs))):
            for it in its:
                excl = set(it.exclude_doc_ids)
                hits = [h for h in dense.retrieve(it.prompt, 60) if chunks[h.index].doc_id not in excl][
                    : cfg.ra_passages
                ]
                cands = sentence_features(
                    it.prompt, [(chunks[h.index], h.score) for h in hits], encoder=enc, lm=lm, idf=idf
                )
                for c in cands:
                    c["label"] = answer_recall_strict(c["text"], it.answers) if variant == "answerable" else 0.0
                rows.append({"id": it.id, "variant": variant, "question": it.prompt, "cands": cands})
            print(name, variant, f"{time.perf_counter() - t0:.0f}s", flush=True)
        (out_dir / f"{name}.json").write_text(json.dumps(rows))


def _score(c: dict, w: dict[str, float]) -> float:
    return sum(wv * float(c.get(k, 0.0)) for k, wv in w.items())


def evaluate(rows: list[dict], w: dict[str, float] | None) -> tuple[float, list[float], list[float]]:
    """(strict recall of the chosen sentence, best scores of answerable, of unanswerable questions)."""
    hit = 0.0
    n = 0
    pos_scores: list[float] = []
    neg_scores: list[float] = []
    for r in rows:
        cands = r["cands"]
        if not cands:
            best, s = None, -1e9
        elif w is None:  # passage-dump
            best = min(cands, key=lambda c: (c["rank"], c["pos"]))
            s = best["cos"]
        else:
            best = max(cands, key=lambda c: _score(c, w))
            s = _score(best, w)
        if r["variant"] == "answerable":
            n += 1
            hit += best["label"] if best else 0.0
            pos_scores.append(s)
        else:
            neg_scores.append(s)
    return hit / max(n, 1), pos_scores, neg_scores


def abstention_at(pos: list[float], neg: list[float], max_answerable: float = 0.10) -> tuple[float, float]:
    """(threshold, unanswerable abstention) with answerable abstention <= max_answerable."""
    thr = float(np.quantile(np.asarray(pos), max_answerable))
    return thr, float(np.mean(np.asarray(neg) < thr))


def fit(args: argparse.Namespace) -> None:
    data = {s: json.loads((Path(args.cache) / f"{s}.json").read_text()) for s in SETS}
    oracle = {
        s: np.mean([max((c["label"] for c in r["cands"]), default=0) for r in rows if r["variant"] == "answerable"])
        for s, rows in data.items()
    }
    print("oracle (some sentence of the top chunks answers):", {k: round(float(v), 3) for k, v in oracle.items()})

    def report(label: str, w: dict[str, float] | None) -> float:
        res = {s: evaluate(rows, w) for s, rows in data.items()}
        rec = {s: res[s][0] for s in SETS}
        ab = {s: abstention_at(res[s][1], res[s][2]) for s in SETS}
        mean = sum(rec.values()) / len(rec)
        print(
            f"{label:60s} "
            + " ".join(f"{s[:5]}={rec[s]:.3f}" for s in SETS)
            + f" mean={mean:.3f} | "
            + " ".join(f"abst@10%({s[:5]})={ab[s][1]:.2f}" for s in SETS)
        )
        return mean

    report("passage-dump (first sentence, top chunk)", None)
    report("minilm argmax (shipped)", {"cos": 1.0})
    report("lm question likelihood", {"qlik": 1.0})
    report("idf coverage", {"idf_cov": 1.0})
    grid = {
        "cos": [0.0, 1.0],
        "qlik": [0.0, 0.1, 0.2] if any(c["qlik"] for r in data[SETS[0]] for c in r["cands"]) else [0.0],
        "idf_cov": [0.0, 0.25, 0.5, 1.0],
        "idf2_cov": [0.0, 0.25, 0.5],
        "bigram": [0.0, 0.1, 0.2],
        "type_match": [0.0, 0.1, 0.2, 0.3],
        "first": [0.0, 0.05, 0.1, 0.2],
        "rank_inv": [0.0, 0.05, 0.1, 0.2],
        "chunk_score": [0.0, 0.5],
        "long": [0.0, -0.1],
    }
    keys = list(grid)
    best: list[tuple[float, dict]] = []
    for vals in itertools.product(*(grid[k] for k in keys)):
        w = {k: v for k, v in zip(keys, vals, strict=True) if v}
        if not w:
            continue
        m = sum(evaluate(rows, w)[0] for rows in data.values()) / len(data)
        best.append((m, w))
    best.sort(key=lambda t: -t[0])
    for _m, w in best[:8]:
        report(json.dumps(w), w)


SUPPORT_FEATURES = ("cos", "idf_cov", "idf2_cov", "bigram", "type_match", "chunk_score", "chunk_cov2", "chunk_miss")


def _support_score(cands: list[dict], w: dict[str, float]) -> float:
    return max((_score(c, w) for c in cands), default=-1.0)


def _shared_threshold(
    scores: dict[str, tuple[np.ndarray, np.ndarray]], max_answerable: float
) -> tuple[float, dict[str, float], dict[str, float]]:
    """One threshold for every set: the highest that abstains on at most ``max_answerable`` of the
    answerable questions of EACH set; returns it with the per-set abstention (answerable, unanswerable)."""
    thr = min(float(np.quantile(pos, max_answerable, method="lower")) for pos, _ in scores.values())
    ans = {s: float(np.mean(pos < thr)) for s, (pos, _) in scores.items()}
    una = {s: float(np.mean(neg < thr)) for s, (_, neg) in scores.items()}
    return thr, ans, una


def _feature_matrix(rows: list[dict], variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(n_candidates, n_features) matrix of SUPPORT_FEATURES over the questions of ``variant``, and the
    start offset of each question's candidates (for ``np.maximum.reduceat``); questions without candidates
    get one all-zero row with cos -1."""
    feats, starts = [], []
    for r in rows:
        if r["variant"] != variant:
            continue
        starts.append(len(feats))
        cands = r["cands"] or [{"cos": -1.0}]
        feats.extend([float(c.get(k, 0.0)) for k in SUPPORT_FEATURES] for c in cands)
    return np.asarray(feats, dtype=np.float64), np.asarray(starts)


def support(args: argparse.Namespace) -> None:
    """Abstention criteria: a support score per question (the best linear score over its candidate
    sentences), ONE threshold shared by both sets that abstains on at most ``--max-answerable`` of each
    set's answerable questions; ranked by the worse set's unanswerable abstention, then the mean. A
    2-fold split of the questions (fit the threshold on one half, count on the other) checks that the
    threshold carries over."""
    data = {s: json.loads((Path(args.cache) / f"{s}.json").read_text()) for s in SETS}
    mats = {s: (_feature_matrix(rows, "answerable"), _feature_matrix(rows, "unanswerable")) for s, rows in data.items()}
    grid = {
        "cos": [0.0, 1.0],
        "idf_cov": [0.0, 0.25],
        "idf2_cov": [0.0, 0.25, 0.5],
        "bigram": [0.0, 0.1, 0.25],
        "type_match": [0.0, 0.1],
        "chunk_score": [0.0, 0.25, 0.5],
        "chunk_cov2": [0.0, 0.25, 0.5],
        "chunk_miss": [0.0, -0.1, -0.25, -0.5],
    }
    results = []
    for vals in itertools.product(*(grid[k] for k in SUPPORT_FEATURES)):
        w = {k: v for k, v in zip(SUPPORT_FEATURES, vals, strict=True) if v}
        if not w:
            continue
        wv = np.asarray(vals)
        scores = {
            s: tuple(np.maximum.reduceat(m @ wv, st) for m, st in pair)  # type: ignore[misc]
            for s, pair in mats.items()
        }
        thr, ans, una = _shared_threshold(scores, args.max_answerable)
        results.append((min(una.values()), float(np.mean(list(una.values()))), w, thr, ans, una, scores))
    results.sort(key=lambda t: (-t[0], -t[1]))
    rng = np.random.default_rng(0)
    for _worst, _mean, w, thr, ans, una, scores in results[: args.top]:
        # 2-fold check: threshold from one half of each set's questions, abstention counted on the other
        folds = []
        for _ in range(10):
            half = {s: rng.permutation(len(p)) < len(p) // 2 for s, (p, _) in scores.items()}
            fit_s = {s: (p[half[s]], n[half[s]]) for s, (p, n) in scores.items()}
            t, _, _ = _shared_threshold(fit_s, args.max_answerable)
            folds.append(
                [float(np.mean(p[~half[s]] < t)) for s, (p, _) in scores.items()]
                + [float(np.mean(n[~half[s]] < t)) for s, (_, n) in scores.items()]
            )
        f = np.mean(folds, axis=0)
        print(
            f"{json.dumps(w):100s} thr={thr:.3f} "
            + " ".join(f"{s[:5]}: ans {ans[s]:.3f} unans {una[s]:.3f}" for s in SETS)
            + f" | held-out halves: ans {f[0]:.3f}/{f[1]:.3f} unans {f[2]:.3f}/{f[3]:.3f}"
        )
    ship = {"cos": 1.0, "idf2_cov": 0.25}  # shipped before this study's chunk features
    for _worst, _mean, w, thr, ans, una, _ in results:
        if w == ship:
            print(f"shipped before {json.dumps(w)} thr={thr:.3f} ans {ans} unans {una}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--data", default="../shared/data")
    d.add_argument("--out", default=".cache/answer-sentences")
    d.add_argument("--no-lm", action="store_true", help="skip the LM question likelihood (qlik = 0)")
    f = sub.add_parser("fit")
    f.add_argument("--cache", default=".cache/answer-sentences")
    su = sub.add_parser("support")
    su.add_argument("--cache", default=".cache/answer-sentences")
    su.add_argument("--max-answerable", type=float, default=0.09, help="answerable abstention allowed per set")
    su.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    {"dump": dump, "fit": fit, "support": support}[args.cmd](args)


if __name__ == "__main__":
    main()
