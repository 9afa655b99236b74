"""Per-token cost of streaming outside the model: flat in the answer length, or not.

Streams answers of 64 and 512 new tokens. A forward hook times every LM forward pass and the decoder
records when each step's tokens are committed; the per-token overhead of a stretch of the answer is
its wall time minus the time inside forward passes, divided by the tokens committed in it. What is
left is the engine's own work per token: the mixture, drafts, span rules, detokenisation, span
bookkeeping, stop strings and the stop policy (the request's fixed costs, before the first step and
after the last, are left out). Streaming is linear when that overhead is the same at both lengths
(target: the ratio within 10%). As the first tokens of an answer are decoded differently from the rest
(the answer proposer's sentence is copied in one draft), the long answer is also compared with itself:
its last 64 tokens against tokens 65 to 128, where a quadratic cost would show most.

The model is a 2-layer random Llama with the default tokenizer (as ``tiny_lm`` in tests/conftest.py,
with a longer context), so the model's share is small and the overhead shows; the answer never stops
by itself (no abstention, a sentence limit it cannot reach, a stop string that never occurs), so both
lengths run in full with every per-step check on.

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

import nest_integrations.engine as engine_module
from nest_integrations import NestConfig, NestEngine, load_model
from nest_integrations.decoding.loop import NestDecoder
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
    """(start, end) of every forward pass of the model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.spans: list[tuple[float, float]] = []
        self._t0 = 0.0
        self._handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, module: Any, args: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, module: Any, args: Any, output: Any) -> None:
        self.spans.append((self._t0, time.perf_counter()))

    def within(self, t0: float, t1: float) -> float:
        """Time inside forward passes between ``t0`` and ``t1``."""
        return sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in self.spans)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


class RecordingDecoder(NestDecoder):
    """The engine's decoder, noting when each step's tokens are committed: (time, tokens so far)."""

    log: list[tuple[float, int]] = []

    def run(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        n = 0
        for commits in super().run(*args, **kwargs):
            n += len(commits)
            RecordingDecoder.log.append((time.perf_counter(), n))
            yield commits


def _window(log: list[tuple[float, int]], first: int, last: int) -> tuple[int, int]:
    """Indices into ``log`` bounding the steps that commit tokens ``first``..``last``."""
    i = next(k for k, (_, n) in enumerate(log) if n >= first)
    j = next(k for k, (_, n) in enumerate(log) if n >= last)
    return max(0, min(i - 1, j - 1)), j  # from the step before the window's first token is committed


def overhead(log: list[tuple[float, int]], timer: ForwardTimer, first: int, last: int) -> float:
    """Seconds outside the model per token, over the steps that commit tokens ``first``..``last``."""
    i, j = _window(log, first, last)
    (t0, n0), (t1, n1) = log[i], log[j]
    return (t1 - t0 - timer.within(t0, t1)) / (n1 - n0)


def steps_per_token(log: list[tuple[float, int]], first: int, last: int) -> float:
    """Decoding steps per committed token over tokens ``first``..``last`` (drafts commit several at once)."""
    i, j = _window(log, first, last)
    return (j - i) / (log[j][1] - log[i][1])


def measure(engine: NestEngine, n_tokens: int, overrides: dict[str, Any], window: int) -> dict[str, float]:
    """One streamed answer: tokens, forwards, and per-token seconds in and outside the model."""
    RecordingDecoder.log = []
    timer = ForwardTimer(engine.lm.model)
    try:
        result = None
        for delta in engine.stream(QUESTION, max_new_tokens=n_tokens, **overrides):
            result = delta.result or result
    finally:
        timer.close()
    assert result is not None
    log = RecordingDecoder.log
    tokens = log[-1][1]
    t0, t1 = log[0][0], log[-1][0]
    row = {
        "tokens": tokens,
        "forwards": len(timer.spans),
        "spans": len(result.spans),
        "model_per_token": timer.within(t0, t1) / (tokens - log[0][1]),
        "overhead_per_token": overhead(log, timer, 1, tokens),
        "overhead_early": overhead(log, timer, min(window + 1, tokens), min(2 * window, tokens)),
        "overhead_last": overhead(log, timer, max(1, tokens - window + 1), tokens),
        "steps_early": steps_per_token(log, min(window + 1, tokens), min(2 * window, tokens)),
        "steps_last": steps_per_token(log, max(1, tokens - window + 1), tokens),
    }
    return row


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
    engine_module.NestDecoder = RecordingDecoder  # type: ignore[misc]
    short_n, long_n = args.lengths
    measure(engine, 16, overrides, short_n)  # warm-up: retriever, sentence encoder, kernels
    all_runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.lengths}
    for _ in range(args.repeats):  # the lengths alternate, so both see the same machine load
        for n in args.lengths:
            all_runs[n].append(measure(engine, n, overrides, short_n))
    rows: dict[int, dict[str, Any]] = {}
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
    ratio = rows[long_n]["overhead_per_token"] / rows[short_n]["overhead_per_token"]
    early, late = rows[long_n]["overhead_early"], rows[long_n]["overhead_last"]
    ratio_late = late / early
    flat = abs(ratio - 1) <= 0.10
    print(
        f"in the {long_n}-token answer: tokens {short_n + 1}-{2 * short_n} {early * 1e3:.3f} ms "
        f"({rows[long_n]['steps_early']:.2f} steps/token), tokens {long_n - short_n + 1}-{long_n} {late * 1e3:.3f} ms "
        f"({rows[long_n]['steps_last']:.2f} steps/token) per token outside the model: ratio {ratio_late:.3f}"
    )
    print(
        f"overhead per token outside the model, {long_n} vs {short_n} new tokens: ratio {ratio:.3f} "
        f"({'flat: within 10%' if flat else 'NOT flat'})"
    )
    if args.json:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "ratio": ratio,
                  "ratio_last_vs_first": ratio_late}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1))
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
