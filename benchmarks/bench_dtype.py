"""Which weight dtype is fastest on this device: the measurement behind ``dtype="auto"`` (issue 12).

    python benchmarks/bench_dtype.py                       # the default model, on cpu (or cuda when visible)
    python benchmarks/bench_dtype.py --out docs/results/dtype-cpu

For each dtype (float32 and bfloat16; float16 too on a GPU), in one process, interleaved with rotation after one
warm-up each: greedy ``generate`` of ``--new-tokens`` tokens after a retrieval-augmented prompt over the demo corpus
(decode speed), and the key encoding of the demo corpus's chunks (indexing speed). Ratios are against float32 in
the same run. :func:`nest_integrations.models.resolve_dtype` picks bfloat16 on a CPU only where the CPU computes bf16
natively (AVX-512 BF16 / AMX); this benchmark is how that rule is checked on a given machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nest_integrations import NestConfig, NestEngine, load_model  # noqa: E402
from nest_integrations.chunks import chunks_from_documents  # noqa: E402
from nest_integrations.demo import load_demo_documents  # noqa: E402
from nest_integrations.models import _cpu_has_native_bf16, resolve_device, resolve_dtype  # noqa: E402
from nest_integrations.store.encoder import KeyEncoder  # noqa: E402

QUESTIONS = [
    "Who performed the national anthem at Super Bowl 50?",
    "Where was Nikola Tesla born?",
    "What did Marie Curie discover?",
    "When was Charles Darwin born?",
    "Who was Ada Lovelace's father?",
    "What is the Amazon rainforest?",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the questions (after the warm-up)")
    ap.add_argument("--out", type=Path, default=None, help="output path without suffix")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    dtypes = ["float32", "bfloat16"] + (["float16"] if device.startswith("cuda") else [])
    docs = load_demo_documents()
    chunks = chunks_from_documents(docs, chunk_size=800)
    lms = {d: load_model(dtype=d, device=device) for d in dtypes}
    cfg = NestConfig(method="ra", max_new_tokens=args.new_tokens)
    engine = NestEngine(lms["float32"], chunks, cfg)  # prompts only (the passage stage does not use the LM)
    prompts = [engine.prepare(q)[0] for q in QUESTIONS]
    texts = [c.text for c in chunks[:24]]
    decode: dict[str, list[float]] = {d: [] for d in dtypes}
    encode: dict[str, list[float]] = {d: [] for d in dtypes}
    n_key_tokens = 0
    for r in range(args.rounds + 1):
        for i, ids in enumerate(prompts):
            order = dtypes[(i + r) % len(dtypes) :] + dtypes[: (i + r) % len(dtypes)]
            for d in order:
                lm = lms[d]
                x = torch.tensor([ids], device=lm.device)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.new_tokens,
                                            min_new_tokens=args.new_tokens, do_sample=False,
                                            pad_token_id=lm.tokenizer.eos_token_id)  # fmt: skip
                dt = time.perf_counter() - t0
                if r > 0:
                    decode[d].append((out.shape[1] - len(ids)) / dt)
        for d in dtypes[r % len(dtypes) :] + dtypes[: r % len(dtypes)]:
            enc = KeyEncoder(lms[d], key_layer=-2)
            t0 = time.perf_counter()
            keys = enc.encode(texts)
            dt = time.perf_counter() - t0
            n = sum(k.n_entries + 1 for k in keys)
            n_key_tokens = n
            if r > 0:
                encode[d].append(n / dt)
    rows = {}
    for d in dtypes:
        rows[d] = {
            "decode_tok_s": round(statistics.median(decode[d]), 1),
            "decode_vs_float32": round(statistics.median(decode[d]) / statistics.median(decode["float32"]), 3),
            "key_encoding_tok_s": round(statistics.median(encode[d]), 1),
            "key_encoding_vs_float32": round(statistics.median(encode[d]) / statistics.median(encode["float32"]), 3),
        }
    report = {
        "command": "python benchmarks/bench_dtype.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device,
        "machine": platform.processor() or platform.machine(),
        "cpu_native_bf16": _cpu_has_native_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "auto_dtype": resolve_dtype("auto", device),
        "new_tokens": args.new_tokens,
        "questions": len(QUESTIONS),
        "rounds": args.rounds,
        "key_tokens": n_key_tokens,
        "dtypes": rows,
    }
    lines = [f"# {report['command']}",
             f"device {device}, {report['machine']}, torch CPU capability {report['cpu_capability']}, native bf16: "
             f"{report['cpu_native_bf16']}, {report['threads']} threads; dtype='auto' resolves to {report['auto_dtype']}",
             f"{'dtype':<10} {'decode tok/s':>13} {'vs f32':>7} {'keys tok/s':>11} {'vs f32':>7}"]  # fmt: skip
    for d, row in rows.items():
        lines.append(f"{d:<10} {row['decode_tok_s']:>13.1f} {row['decode_vs_float32']:>7.2f} "
                     f"{row['key_encoding_tok_s']:>11.1f} {row['key_encoding_vs_float32']:>7.2f}")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
