"""Small tuning sweep on dev data: strict recall / F1 / length / speed for NestConfig variants.

Usage: python benchmarks/tune.py --limit 20 --set gamma=0.1 --grid neighbors=16,64,256 alpha=0.3,0.5
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from nest_integrations import Document, NestConfig, NestEngine, load_model
from nest_integrations.eval.metrics import answer_recall, answer_recall_strict, token_f1


def _val(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev200"))
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--grid", nargs="*", default=[])
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    lm = load_model(dtype=args.dtype)
    data = Path(args.data)
    docs = [Document(r["id"], r["text"], {"title": r["title"]}) for r in map(json.loads, open(data / "corpus.jsonl"))]
    qs = [json.loads(line) for line in open(data / "questions.jsonl")][args.offset : args.offset + args.limit]
    base = {k: _val(v) for k, v in (s.split("=", 1) for s in args.set)}
    base.setdefault("max_new_tokens", 64)
    eng = NestEngine.from_documents(docs, lm, NestConfig(**base))
    grid = [(k, [_val(x) for x in v.split(",")]) for k, v in (g.split("=", 1) for g in args.grid)]
    combos = [dict(zip([k for k, _ in grid], vals, strict=True)) for vals in itertools.product(*[v for _, v in grid])] or [{}]
    eng.generate("warm up", max_new_tokens=4)
    for combo in combos:
        rows = []
        for q in qs:
            r = eng.generate(q["question"], **combo)
            rows.append((answer_recall(r.text, q["answers"]), answer_recall_strict(r.text, q["answers"]),
                         token_f1(r.text, q["answers"]), r.stats.output_tokens, r.stats.total_s,
                         r.stats.attribution_ratio, r.stats.forward_passes))
            if args.show:
                print("   ", q["answers"], repr(r.text[:160]), [s.n_tokens for s in r.spans])
        n = len(rows)
        col = list(zip(*rows, strict=True))
        toks, secs = sum(col[3]), sum(col[4])
        print(json.dumps({**combo, "recall": round(sum(col[0]) / n, 3), "strict": round(sum(col[1]) / n, 3),
                          "f1": round(sum(col[2]) / n, 3), "tokens": round(toks / n, 1), "s_per_q": round(secs / n, 2),
                          "tok_s": round(toks / secs, 1), "attr": round(sum(col[5]) / n, 2),
                          "fwd_per_tok": round(sum(col[6]) / toks, 2)}), flush=True)


if __name__ == "__main__":
    main()
