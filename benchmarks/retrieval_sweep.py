"""Passage-stage sweep on both QA dev sets: recall@k of dense, BM25 and fused rankings (no LM).

    python benchmarks/retrieval_sweep.py --out docs/results/retrieval-sweep.json

Fusion variants: the paper's adaptive fusion with several ``fusion_coef`` values, and reciprocal rank
fusion (RRF, k=60) with several dense weights. Chunks are the engine's default (800 characters).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nest_integrations.chunks import chunks_from_documents
from nest_integrations.eval.data import read_corpus, read_jsonl
from nest_integrations.retrieval import BM25Retriever, DenseRetriever
from nest_integrations.retrieval.hybrid import fuse_scores, rrf_scores

SETS = ("squad-dev200", "nq-dev200")


def recall(hits_doc_ids: list[list[str]], gold: list[list[str]], k: int) -> float:
    return sum(1 for h, g in zip(hits_doc_ids, gold, strict=True) if set(h[:k]) & set(g)) / len(gold)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    report: dict = {}
    for name in SETS:
        t0 = time.perf_counter()
        docs = read_corpus(Path(args.data) / name / "corpus.jsonl")
        qs = read_jsonl(Path(args.data) / name / "questions.jsonl")
        chunks = chunks_from_documents(docs)
        texts = [c.text for c in chunks]
        dense, sparse = DenseRetriever(texts), BM25Retriever(texts)
        gold = [q["gold_passage_ids"] for q in qs]
        n = min(500, len(texts))
        d_lists = [{h.index: h.score for h in dense.retrieve(q["question"], n)} for q in qs]
        s_lists = [{h.index: h.score for h in sparse.retrieve(q["question"], n)} for q in qs]
        variants: dict[str, list[list[int]]] = {}
        variants["dense"] = [sorted(d, key=lambda i: -d[i])[:5] for d in d_lists]
        variants["bm25"] = [sorted(s, key=lambda i: -s[i])[:5] for s in s_lists]
        for coef in (0.3, 0.5, 0.7, 0.9):
            variants[f"paper-fusion(coef={coef})"] = [
                [h.index for h in fuse_scores(d, s, 5, fusion_coef=coef)] for d, s in zip(d_lists, s_lists, strict=True)
            ]
        for w in (0.5, 0.6, 0.7, 0.8):
            variants[f"rrf(dense_weight={w})"] = [
                [h.index for h in rrf_scores(d, s, 5, dense_weight=w)] for d, s in zip(d_lists, s_lists, strict=True)
            ]
        res = {}
        for v, hits in variants.items():
            ids = [[chunks[i].doc_id for i in h] for h in hits]
            res[v] = {f"recall@{k}": recall(ids, gold, k) for k in (1, 3, 5)}
        report[name] = {"chunks": len(chunks), "questions": len(qs), "seconds": time.perf_counter() - t0, "variants": res}
        print(name, json.dumps(res, indent=1))
    mean = {
        v: {k: sum(report[s]["variants"][v][k] for s in SETS) / len(SETS) for k in ("recall@1", "recall@3", "recall@5")}
        for v in report[SETS[0]]["variants"]
    }
    report["mean"] = mean
    print("mean", json.dumps(mean, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
