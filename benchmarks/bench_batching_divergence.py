"""How many of N concurrent requests diverge from their single-request output under continuous batching (issue 14).

    python benchmarks/bench_batching_divergence.py --dtype bfloat16 --n 64 --out docs/results/batching-divergence-bf16.json

Each of the package's sample questions (cycled to N) is answered alone by ``NestEngine(batching=True)``, then all
N at once from N threads (at most ``--max-active`` decoding together, as the server admits them). A request
diverges when its tokens differ; the first differing position is reported. In bf16, batched kernels round
differently from unbatched ones, so near-ties can flip.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-active", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    from nest_integrations import NestConfig, NestEngine, load_model
    from nest_integrations.cli.common import read_files
    from nest_integrations.demo import load_demo_documents, load_sample_questions

    torch.set_num_threads(2)
    folder = Path(tempfile.mkdtemp(prefix="nest-div-"))
    for d in load_demo_documents():
        (folder / f"{d.doc_id}.txt").write_text(d.text, encoding="utf-8")
    lm = load_model(dtype=args.dtype)
    _, chunks = read_files([str(folder)], 800)
    engine = NestEngine(lm, chunks, NestConfig(max_new_tokens=args.max_new_tokens), batching=True)
    qs = [q["question"] for q in load_sample_questions()]
    questions = [qs[i % len(qs)] for i in range(args.n)]
    alone_by_q = {q: list(engine.generate(q).token_ids) for q in dict.fromkeys(questions)}
    slots = threading.Semaphore(args.max_active)
    together: list[list[int] | None] = [None] * args.n

    def run(i: int) -> None:
        with slots:
            together[i] = list(engine.generate(questions[i]).token_ids)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rows = []
    for q, got in zip(questions, together, strict=True):
        want = alone_by_q[q]
        first = next((k for k, (a, b) in enumerate(zip(want, got or [], strict=False)) if a != b), None)
        if first is None and len(want) != len(got or []):
            first = min(len(want), len(got or []))
        rows.append({"question": q, "diverged": first is not None, "first_diff": first})
    report = {"dtype": args.dtype, "n": args.n, "max_active": args.max_active, "distinct_questions": len(alone_by_q),
              "diverged": sum(r["diverged"] for r in rows), "concurrent_wall_s": wall, "rows": rows}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
