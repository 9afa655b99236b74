"""Speed benchmark (issue 2, NEST.md §9): base greedy `generate` vs NEST, interleaved per question, one process.

Everything per request counts for NEST (passage retrieval, gathering keys, prefill, decoding); keys are
precomputed at indexing time, which is this project's design (NEST.md §2). Base = transformers `generate`
with its KV cache, same dtype and threads, after a warm-up. Prints a JSON summary and writes it to --out.

    python benchmarks/bench_speed.py --limit 30 --dtype bfloat16 --out docs/bench_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nest_integrations import Document, NestConfig, NestEngine, load_model
from nest_integrations.eval.metrics import answer_recall_strict
from nest_integrations.prompts import render_prompt, to_messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev200"))
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--set", nargs="*", default=[], help="NestConfig overrides key=value")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(dtype=args.dtype)
    data = Path(args.data)
    docs = [Document(r["id"], r["text"], {"title": r["title"]}) for r in map(json.loads, open(data / "corpus.jsonl"))]
    qs = [json.loads(line) for line in open(data / "questions.jsonl")][: args.limit]
    overrides = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    cfg = NestConfig(max_new_tokens=args.max_new_tokens, **overrides)
    t0 = time.perf_counter()
    eng = NestEngine.from_documents(docs, lm, cfg, precompute_keys=True)
    eng.retrieve("warm up", 1)
    index_s = time.perf_counter() - t0
    eos = lm.eos_token_ids

    def base(question: str):
        t = time.perf_counter()
        ids = render_prompt(lm.tokenizer, to_messages(question))
        with torch.inference_mode():
            out = lm.model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens, do_sample=False)
        gen = out[0, len(ids):].tolist()
        gen = gen[: next((i for i, tok in enumerate(gen) if tok in eos), len(gen))]
        text = lm.tokenizer.decode(gen, skip_special_tokens=True)
        return text, len(gen), time.perf_counter() - t

    base("warm up")
    eng.generate("warm up", max_new_tokens=8)
    rows = {"base": [], "nest": []}
    for q in qs:
        text, n, s = base(q["question"])
        rows["base"].append({"tokens": n, "s": s, "strict": answer_recall_strict(text, q["answers"]), "fwd": n + 1,
                             "copied": 0, "spans": []})
        r = eng.generate(q["question"])
        rows["nest"].append({"tokens": r.stats.output_tokens, "s": r.stats.total_s,
                             "strict": answer_recall_strict(r.text, q["answers"]), "fwd": r.stats.forward_passes,
                             "copied": r.stats.copied_tokens, "spans": r.stats.span_lengths})
    summary = {}
    for name, rs in rows.items():
        toks = sum(x["tokens"] for x in rs)
        secs = [x["s"] for x in rs]
        spans = [n for x in rs for n in x["spans"]]
        summary[name] = {
            "tokens_per_s": toks / sum(secs),
            "sec_per_question": statistics.mean(secs),
            "sec_p50": statistics.median(secs),
            "mean_output_tokens": toks / len(rs),
            "attribution_ratio": sum(x["copied"] for x in rs) / toks if toks else 0.0,
            "mean_span_tokens": statistics.mean(spans) if spans else 0.0,
            "forwards_per_token": sum(x["fwd"] for x in rs) / toks if toks else 0.0,
            "answer_recall_strict": sum(x["strict"] for x in rs) / len(rs),
        }
    summary["nest"]["speedup_tokens_per_s"] = summary["nest"]["tokens_per_s"] / summary["base"]["tokens_per_s"]
    summary["nest"]["sec_per_question_ratio"] = summary["nest"]["sec_per_question"] / summary["base"]["sec_per_question"]
    report = {
        "command": "python benchmarks/bench_speed.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "out", "set")
        ) + (" --set " + " ".join(args.set) if args.set else ""),
        "questions": len(qs),
        "dtype": args.dtype,
        "threads": args.threads,
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "index_s": index_s,
        "config": cfg.model_dump(),
        "summary": summary,
    }
    print(json.dumps(report["summary"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
