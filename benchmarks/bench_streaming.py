"""Per-token cost of streaming outside the model: flat in the answer length, or not.

Streams answers of 64 and 512 new tokens and measures, per generated token, the wall time of the
decoding phase (from the prefill's start to the stream's end) minus the time spent inside the LM's
forward passes (timed by forward hooks). What is left is the engine's own work: the mixture, drafts,
detokenisation, span bookkeeping, stop strings and the stop policy. Streaming is linear when that
per-token overhead is the same at both lengths (target: the 512/64 ratio within 10%).

The default model is a 2-layer random Llama with the default tokenizer (as ``tiny_lm`` in
tests/conftest.py, with a longer context), so the model's share is small and the overhead shows; the
answer never stops by itself (no abstention, a sentence limit it cannot reach, a stop string that
never occurs), so both lengths run in full with every per-step check switched on.

    python benchmarks/bench_streaming.py                 # tiny random model
    python benchmarks/bench_streaming.py --model default # SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nest_integrations import NestConfig, NestEngine, load_model
from nest_integrations.demo import load_demo_documents
from nest_integrations.models import LoadedModel, default_model_dir

QUESTION = "Where was Nikola Tesla born?"


def tiny_model(context: int = 2048) -> LoadedModel:
    """A 2-layer randomly initialised Llama with the default model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=context, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    return LoadedModel(model=LlamaForCausalLM(cfg).eval(), tokenizer=tok, model_id="tiny-random-llama", path=Path("."), dtype="float32")


class ForwardTimer:
    """Time inside the model's forward passes, and when the first one started."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.total = 0.0
        self.count = 0
        self.first_start: float | None = None
        self._t0 = 0.0
        self._handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, module: Any, args: Any) -> None:
        self._t0 = time.perf_counter()
        if self.first_start is None:
            self.first_start = self._t0

    def _post(self, module: Any, args: Any, output: Any) -> None:
        self.total += time.perf_counter() - self._t0
        self.count += 1

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def measure(engine: NestEngine, n_tokens: int, overrides: dict[str, Any]) -> dict[str, float]:
    """One streamed answer: tokens, forwards, and per-token times (seconds) in and outside the model."""
    timer = ForwardTimer(engine.lm.model)
    try:
        result = None
        n_deltas = 0
        for delta in engine.stream(QUESTION, max_new_tokens=n_tokens, **overrides):
            n_deltas += 1
            result = delta.result or result
        t_end = time.perf_counter()
    finally:
        timer.close()
    assert result is not None and timer.first_start is not None
    tokens = result.stats.output_tokens
    phase = t_end - timer.first_start
    return {
        "tokens": tokens,
        "forwards": timer.count,
        "deltas": n_deltas,
        "spans": len(result.spans),
        "model_per_token": timer.total / tokens,
        "overhead_per_token": (phase - timer.total) / tokens,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["tiny", "default"], default="tiny")
    ap.add_argument("--lengths", type=int, nargs=2, default=[64, 512], metavar=("SHORT", "LONG"))
    ap.add_argument("--repeats", type=int, default=5, help="runs per length (the median is reported)")
    ap.add_argument("--method", default="nest", help="nest | ra-nest | knnlm | ra | base")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lm = tiny_model(context=args.lengths[1] + 1024) if args.model == "tiny" else load_model()
    config = NestConfig(method=args.method, passages=3, ra_passages=2)
    engine = NestEngine.from_documents(load_demo_documents(), lm, config, chunk_size=600, precompute_keys=True)
    overrides: dict[str, Any] = dict(
        abstain="off", stop_after_cited_sentence=False, max_sentences=100_000, stop=["\x00never\x00"]
    )
    measure(engine, 16, overrides)  # warm-up: retriever, sentence encoder, kernels
    all_runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.lengths}
    for _ in range(args.repeats):  # the lengths alternate, so both see the same machine load
        for n in args.lengths:
            all_runs[n].append(measure(engine, n, overrides))
    rows = {}
    for n, runs in all_runs.items():
        row: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        row["overhead_runs_ms"] = [round(r["overhead_per_token"] * 1e3, 3) for r in runs]
        rows[n] = row
        print(
            f"{n:>4} new tokens: {row['tokens']:.0f} tokens, {row['forwards']:.0f} forwards, {row['spans']:.0f} spans; "
            f"per token: model {row['model_per_token'] * 1e3:.3f} ms, outside the model "
            f"{row['overhead_per_token'] * 1e3:.3f} ms (runs {row['overhead_runs_ms']})",
            flush=True,
        )
    short, long_ = (rows[n]["overhead_per_token"] for n in args.lengths)
    ratio = long_ / short
    flat = abs(ratio - 1) <= 0.10
    print(f"overhead per token, {args.lengths[1]} vs {args.lengths[0]} new tokens: ratio {ratio:.3f} "
          f"({'flat: within 10%' if flat else 'NOT flat'})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows, "ratio": ratio}, indent=1))
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
