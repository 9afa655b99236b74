"""How far can ANY exact-copy drafter beat prompt lookup in lossless mode? (issue 13's 1.3× target)

In context mode every draft NEST can make — a chunk n-gram match, a kNN anchor, a match in the text itself —
is a continuation of some occurrence of tokens in the prompt or the response so far: the token store *is*
the prompt's text. So the forward passes that lossless decoding needs are bounded below by an **oracle**
that, at every step, knows the model's greedy output and picks, among the continuations of every earlier
occurrence of the last 1–3 tokens, the one the model accepts furthest (an unbounded draft tree verified for
free). This script replays the model's greedy outputs (real model, bf16, the benchmark's prompts) and
counts forward passes per output token for:

- ``prompt-lookup``: transformers' rule (earliest occurrence of the last ``max_matching_ngram_size``…1 tokens
  in the text, ``prompt_lookup_num_tokens`` drafted) with the tuned (20, 2);
- ``nest-latest-8``: the latest occurrence of the last 3…1 tokens, 8 drafted (lossless NEST's history
  drafts at the tuned ``draft_length``);
- ``tree-K-D``: K distinct continuations verified in one pass as a tree (REST / SpecInfer shape), with the
  number of tokens such a pass feeds;
- ``oracle``: every continuation, 32 tokens deep.

Each step feeds the last committed token plus the draft; the prefill is not counted (the same for all).

    python benchmarks/draft_bound.py --per-kind 30 --dtype bfloat16 --out docs/results/draft-bound-cpu.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import bench_context as bc

from nest_integrations import load_model
from nest_integrations.prompts import render_prompt

Drafter = Callable[[list[int]], list[tuple[int, ...]]]


def continuations(text: list[int], k: int, depth: int, max_n: int = 3, earliest: bool = False) -> list[tuple[int, ...]]:
    """Up to ``k`` distinct continuations (``depth`` tokens) of earlier occurrences of the text's last n tokens,
    longest n first; latest occurrence first (``earliest``: in text order, prompt lookup's rule)."""
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    size = len(text)
    for n in range(min(max_n, size - 1), 0, -1):
        key = text[size - n :]
        ends = range(n - 1, size - 1) if earliest else range(size - 2, n - 2, -1)
        for q in ends:
            if text[q - n + 1 : q + 1] == key:
                c = tuple(text[q + 1 : q + 1 + depth])
                if c and c not in seen:
                    seen.add(c)
                    out.append(c)
                    if len(out) >= k:
                        return out
    return out


def replay(prompt: list[int], output: list[int], drafter: Drafter) -> tuple[int, int]:
    """(forward passes, tokens fed) to produce ``output`` greedily with drafts from ``drafter``."""
    forwards = fed = 0
    t = 0
    while t < len(output):
        cands = drafter(prompt + output[: t + 1])
        best = 0
        for c in cands:
            k = 0
            while k < len(c) and t + 1 + k < len(output) and output[t + 1 + k] == c[k]:
                k += 1
            best = max(best, k)
        forwards += 1
        fed += 1 + len({c[:i] for c in cands for i in range(1, len(c) + 1)})  # tree nodes (shared prefixes once)
        t += 1 + best
    return forwards, fed


DRAFTERS: dict[str, Drafter] = {
    "prompt-lookup": lambda x: continuations(x, 1, 20, max_n=2, earliest=True),
    "nest-latest-8": lambda x: continuations(x, 1, 8),
    "latest-20": lambda x: continuations(x, 1, 20),
    "tree-4-8": lambda x: continuations(x, 4, 8),
    "tree-8-10": lambda x: continuations(x, 8, 10),
    "oracle": lambda x: continuations(x, 10**9, 32),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lm = load_model(dtype=args.dtype)
    kinds = {"qa": bc.qa_prompts(args.per_kind, args.seed), "summary": bc.summary_prompts(args.per_kind, args.seed)}
    report: dict[str, object] = {
        "command": "python benchmarks/draft_bound.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    }
    for kind, prompts in kinds.items():
        rows = []
        for i, p in enumerate(prompts):
            g = bc.run_generate(lm, p["messages"], args.max_new_tokens, None)
            rows.append((render_prompt(lm.tokenizer, p["messages"]), g["ids"]))
            print(f"[{kind} {i + 1}/{len(prompts)}] {g['tokens']} tokens", flush=True)
        tokens = sum(len(o) for _, o in rows)
        res = {}
        for name, drafter in DRAFTERS.items():
            f = fed = 0
            for prompt, out in rows:
                a, b = replay(prompt, out, drafter)
                f, fed = f + a, fed + b
            res[name] = {
                "forwards_per_token": round(f / tokens, 4),
                "tokens_fed_per_forward": round(fed / max(f, 1), 2),
            }
        pl = res["prompt-lookup"]["forwards_per_token"]
        for r in res.values():
            r["x_prompt_lookup_forwards"] = round(pl / r["forwards_per_token"], 3)
        report[kind] = {"prompts": len(rows), "output_tokens": tokens, "drafters": res}
        print(kind, json.dumps(res, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
