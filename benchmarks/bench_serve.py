"""Load benchmark of ``nest serve`` (issue 14): concurrent streaming clients against the same requests sent one by
one through the engine without batching, in the same run and dtype. Loopback only, bounded in count and time.

    python benchmarks/bench_serve.py --dtype bfloat16 --clients 1,4,8,16 --per-client 10 --out docs/results/serve-cpu.json

First the baseline: ``--baseline`` requests answered one after another by a ``NestEngine`` in this process
(``engine.generate``, no server, no batching): output tokens/s and s/request. Then a ``nest serve`` process (same
corpus, model, dtype and config; continuous batching on) on a free loopback port, and for each level C, C
clients that each send ``--per-client`` streamed chat completions back to back. Reported per level: throughput
(output tokens/s over all requests, from the usage each stream ends with), its ratio to the baseline, p50 / p95
latency and time to first token, requests failed (anything but a complete 200 stream) and 429s, and the
server's mean batch size (``/metrics``). The questions are the package's sample questions over the demo corpus,
each client starting at another one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _questions() -> list[str]:
    from nest_integrations.demo import load_sample_questions

    return [q["question"] for q in load_sample_questions()]


def _corpus() -> Path:
    from nest_integrations.demo import load_demo_documents

    folder = Path(tempfile.mkdtemp(prefix="nest-bench-serve-"))
    for d in load_demo_documents():
        (folder / f"{d.doc_id}.txt").write_text(d.text, encoding="utf-8")
    return folder


def baseline(corpus: Path, dtype: str, n: int, max_tokens: int, threads: int, method: str | None) -> dict[str, Any]:
    """``n`` requests one by one through the engine (no batching)."""
    import torch

    from nest_integrations import NestConfig, NestEngine, load_model
    from nest_integrations.cli.common import read_files

    torch.set_num_threads(threads)
    lm = load_model(dtype=dtype)
    _, chunks = read_files([str(corpus)], 800)
    cfg = NestConfig(max_new_tokens=max_tokens)
    engine = NestEngine(lm, chunks, cfg.replace(method=method) if method else cfg)
    qs = _questions()
    engine.generate(qs[0])  # warm-up: keys of the chunks it needs, kernels
    tokens, lat = 0, []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        r = engine.generate(qs[i % len(qs)])
        lat.append(time.perf_counter() - t)
        tokens += len(r.token_ids)
    wall = time.perf_counter() - t0
    return {"requests": n, "output_tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "s_per_request": statistics.mean(lat)}


class Server:
    def __init__(self, corpus: Path, dtype: str, max_tokens: int, threads: int) -> None:
        cmd = [sys.executable, "-m", "nest_integrations.cli", "serve", "--docs", str(corpus), "--port", "0",
               "--dtype", dtype, "--max-new-tokens", str(max_tokens), "--log-level", "info",
               "--max-active", "16", "--max-queue", "64"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        self.url = ""
        found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
                if m and not self.url:
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(300):
            self.proc.kill()
            raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _client(
    http: Any, url: str, questions: list[str], start: int, n: int, max_tokens: int, out: list, method: str | None
) -> None:
    for k in range(n):
        q = questions[(start + k) % len(questions)]
        t0 = time.perf_counter()
        ttft = None
        tokens = None
        status = None
        try:
            async with http.stream("POST", f"{url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": q}], "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True},
                **({"nest": {"config": {"method": method}}} if method else {}),
            }) as r:
                status = r.status_code
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    msg = json.loads(data)
                    if ttft is None and msg.get("choices") and msg["choices"][0]["delta"].get("content"):
                        ttft = time.perf_counter() - t0
                    if msg.get("usage"):
                        tokens = msg["usage"]["completion_tokens"]
        except Exception as e:  # noqa: BLE001 - counted as a failure
            status = f"{type(e).__name__}"
        out.append({"status": status, "latency_s": time.perf_counter() - t0, "ttft_s": ttft, "tokens": tokens})


async def level(url: str, clients: int, per_client: int, max_tokens: int, method: str | None) -> dict[str, Any]:
    import httpx

    qs = _questions()
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[
            _client(http, url, qs, 3 * i, per_client, max_tokens, rows, method) for i in range(clients)
        ])
        wall = time.perf_counter() - t0
    ok = [r for r in rows if r["status"] == 200 and r["tokens"] is not None]
    lat = sorted(r["latency_s"] for r in ok)
    ttft = sorted(r["ttft_s"] for r in ok if r["ttft_s"] is not None)

    def pct(xs: list[float], p: float) -> float | None:
        return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else None

    tokens = sum(r["tokens"] for r in ok)
    return {
        "clients": clients, "requests": len(rows), "failed": len(rows) - len(ok),
        "http_429": sum(1 for r in rows if r["status"] == 429), "wall_s": wall, "output_tokens": tokens,
        "tokens_per_s": tokens / wall, "latency_p50_s": pct(lat, 0.5), "latency_p95_s": pct(lat, 0.95),
        "ttft_p50_s": pct(ttft, 0.5), "ttft_p95_s": pct(ttft, 0.95),
    }


def _metrics(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics").text
    return {k: float(v) for k, v in re.findall(r"^(nest_\w+) (\S+)$", text, flags=re.M)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--per-client", type=int, default=10)
    ap.add_argument("--baseline", type=int, default=20, help="requests of the sequential engine baseline")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--method", default=None, choices=["nest", "ra-nest", "base", "ra"],
        help="NestConfig.method of every request and of the baseline (default: the defaults'); `base` is the plain "
        "LM, whose requests are decode-bound (64 one-token steps after a short prompt)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    corpus = _corpus()
    report: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "dtype": args.dtype,
                              "max_tokens": args.max_tokens, "threads": args.threads, "method": args.method or "default"}
    report["baseline"] = base = baseline(corpus, args.dtype, args.baseline, args.max_tokens, args.threads, args.method)
    print(json.dumps({"baseline": base}), flush=True)
    server = Server(corpus, args.dtype, args.max_tokens, args.threads)
    try:
        asyncio.run(level(server.url, 1, 2, args.max_tokens, args.method))  # warm-up
        report["levels"] = []
        for c in [int(x) for x in args.clients.split(",")]:
            m0 = _metrics(server.url)
            row = asyncio.run(level(server.url, c, args.per_client, args.max_tokens, args.method))
            row["vs_sequential_engine"] = row["tokens_per_s"] / base["tokens_per_s"]
            m1 = _metrics(server.url)
            batches = m1["nest_batched_forwards_total"] - m0["nest_batched_forwards_total"]
            jobs = m1["nest_batched_requests_total"] - m0["nest_batched_requests_total"]
            solo = m1["nest_unbatched_forwards_total"] - m0["nest_unbatched_forwards_total"]
            row["mean_batch"] = jobs / batches if batches else 0.0
            row["unbatched_forwards"] = solo
            report["levels"].append(row)
            print(json.dumps(row), flush=True)
        report["server_metrics"] = _metrics(server.url)
    finally:
        server.stop()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
