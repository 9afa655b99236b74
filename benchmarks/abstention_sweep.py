"""Choose the abstention threshold on both QA dev sets (no LM decoding: the criterion is pre-generation).

    python benchmarks/abstention_sweep.py --out docs/results/abstention-sweep.json

For every question of squad-dev200 and nq-dev200, answerable (full corpus) and unanswerable (gold passages
and every passage holding a normalised gold answer of >= 4 characters removed, as ``nest eval
--unanswerable``), it records the engine's relevance score (best MiniLM cosine between the question and a
sentence of the top ``ra_passages`` chunks of the default retriever) and the top-1 chunk's dense score, then
reports abstention rates on both variants for a grid of thresholds and the threshold that maximises the mean
over both sets of (abstention on unanswerable − abstention on answerable) subject to answerable abstention
<= 10% on each set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nest_integrations import NestConfig, NestEngine, load_model
from nest_integrations.eval.data import read_corpus, read_items, unanswerable_variant

SETS = ("squad-dev200", "nq-dev200")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lm = load_model(dtype="bfloat16")
    cfg = NestConfig()
    feats: dict[str, dict[str, list[dict]]] = {}
    for name in SETS:
        corpus = read_corpus(Path(args.data) / name / "corpus.jsonl")
        _, items = read_items(Path(args.data) / name / "questions.jsonl", corpus=corpus)
        eng = NestEngine.from_documents(corpus, lm, cfg)
        feats[name] = {}
        for variant, its in (("answerable", items), ("unanswerable", unanswerable_variant(items, corpus))):
            rows = []
            for it in its:
                hits = eng.retrieve(it.prompt, cfg.ra_passages, exclude_doc_ids=it.exclude_doc_ids)
                rel = eng.relevance(it.prompt, [i for i, _ in hits])
                rows.append({"id": it.id, "relevance": rel, "top1": hits[0][1] if hits else -1.0})
            feats[name][variant] = rows
            print(name, variant, "mean relevance", sum(r["relevance"] for r in rows) / len(rows), flush=True)
    grid = [round(0.20 + 0.01 * i, 2) for i in range(50)]
    table = {}
    for feat in ("relevance", "top1"):
        rows = []
        for t in grid:
            row = {"threshold": t}
            for name in SETS:
                for variant in ("answerable", "unanswerable"):
                    xs = feats[name][variant]
                    row[f"{name}/{variant}"] = sum(1 for r in xs if r[feat] < t) / len(xs)
            rows.append(row)
        ok = [r for r in rows if all(r[f"{n}/answerable"] <= 0.10 for n in SETS)]
        best = max(ok, key=lambda r: sum(r[f"{n}/unanswerable"] - r[f"{n}/answerable"] for n in SETS)) if ok else None
        table[feat] = {"grid": rows, "best": best}
        print(feat, "best", best, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"features": feats, "table": table}, indent=1))


if __name__ == "__main__":
    main()
