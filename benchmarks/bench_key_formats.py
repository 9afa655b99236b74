"""Key formats on both dev sets (issue 15): bytes per token, `nest eval` quality, and top-r neighbour overlap.

For each dev set the float16 datastore is built once (``--cache-dir``, keys streamed to disk), every other
format is converted from it and kept beside it, and the default system (``ra-nest``) answers every question
over each format, one format after another in one process and dtype. Quality figures are `nest eval`'s
(strict recall, F1, attribution ratio, exactness, tokens/s). Neighbour overlap: every kNN search of the
float16 run (query hidden states, the request's entries, the mask) is recorded, then repeated over each
format's decoded keys; overlap = |top-r(format) ∩ top-r(float16)| / r, averaged over query rows.
Bytes per token count every file of the datastore (keys, codebook, token ids, offsets, chunk table,
documents, passage embeddings).

    python benchmarks/bench_key_formats.py --formats float16,int8,pq64,pq96,pq144,pq192 \\
        --dtype bfloat16 --cache-dir .cache/nest-eval --out docs/results/key-formats-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nest_integrations import load_model
from nest_integrations.config import NestConfig
from nest_integrations.datastore import Datastore
from nest_integrations.decoding import loop as decoding_loop
from nest_integrations.eval.data import read_corpus, read_items
from nest_integrations.eval.harness import _cached_engine, cached_store_path, run_eval

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUALITY = (
    "answer_recall_strict", "f1", "attribution_ratio", "attribution_exactness", "tokens_per_s",
    "sec_per_question", "abstention_rate", "mean_span_tokens",
)  # fmt: skip


class SearchRecorder:
    """Wraps the decoding loop's ``search`` and keeps (chunk ids, invalid mask, queries, r) of each call."""

    def __init__(self, token_store: Any, limit: int) -> None:
        self.token_store = token_store
        self.limit = limit
        self.calls: list[dict[str, Any]] = []
        self._real = decoding_loop.search

    def __enter__(self) -> SearchRecorder:
        def spy(store, queries, r, allowed=None):  # type: ignore[no-untyped-def]
            ids = [i for i, _ in store.chunks]
            ts = self.token_store  # the datastore's chunks (not the prompt's): same index, same tokens
            ours = all(
                0 <= i < ts.n_chunks and np.array_equal(ts.get(i).token_ids, ck.token_ids) for i, ck in store.chunks
            )
            if ours and len(self.calls) < self.limit and len(store):
                invalid = store.mask if allowed is None else (store.mask | ~allowed)
                self.calls.append(
                    {"ids": ids, "invalid": invalid.clone(), "queries": queries.detach().float().clone(), "r": r}
                )
            return self._real(store, queries, r, allowed)

        decoding_loop.search = spy
        return self

    def __exit__(self, *exc: object) -> None:
        decoding_loop.search = self._real


def _top(keys: torch.Tensor, queries: torch.Tensor, invalid: torch.Tensor, r: int) -> torch.Tensor:
    d2 = (queries * queries).sum(-1, keepdim=True) + (keys * keys).sum(-1)[None] - 2.0 * queries @ keys.T
    d2[:, invalid] = float("inf")
    k = min(r, int((~invalid).sum()))
    return torch.topk(d2, k, dim=-1, largest=False).indices


def neighbour_overlap(calls: list[dict[str, Any]], ref: Datastore, other: Datastore) -> float:
    """Mean |top-r(other) ∩ top-r(ref)| / r over every recorded query row (entries: the request's tokens)."""
    hits = total = 0.0
    for c in calls:
        blank = [""] * len(c["ids"])
        a = _top(ref.token_store.request_view(c["ids"], blank).keys, c["queries"], c["invalid"], c["r"])
        b = _top(other.token_store.request_view(c["ids"], blank).keys, c["queries"], c["invalid"], c["r"])
        for ra, rb in zip(a.tolist(), b.tolist(), strict=True):
            if ra:
                hits += len(set(ra) & set(rb)) / len(ra)
                total += 1
    return hits / total if total else float("nan")


def store_bytes(path: Path) -> tuple[int, int, dict[str, int]]:
    """(all files' bytes, key files' bytes, bytes per file) of a saved datastore."""
    man = json.loads((path / "manifest.json").read_text())
    files = {k: int(v["bytes"]) for k, v in man["files"].items()}
    files["manifest.json"] = (path / "manifest.json").stat().st_size
    keys = sum(v for k, v in files.items() if k.startswith(("keys", "key_", "pq_")))
    return sum(files.values()), keys, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="squad-dev200,nq-dev200")
    ap.add_argument("--formats", default="float16,int8,pq64,pq96,pq144,pq192")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=".cache/nest-eval")
    ap.add_argument("--limit", type=int, default=None, help="the first N questions of each set (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-searches", type=int, default=3000, help="kNN searches recorded per set for the overlap")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(dtype=args.dtype)
    formats = args.formats.split(",")
    out: dict[str, Any] = {
        "command": "python benchmarks/bench_key_formats.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"
        ),
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "model": lm.model_id,
        "dtype": args.dtype,
        "sets": {},
    }
    cache = Path(args.cache_dir)
    for name in args.sets.split(","):
        corpus = read_corpus(DATA / name / "corpus.jsonl")
        items = read_items(DATA / name / "questions.jsonl", "qa")[1][: args.limit]
        rows: dict[str, Any] = {}
        calls: list[dict[str, Any]] = []
        ref_store: Datastore | None = None
        for fmt in formats:
            t0 = time.perf_counter()
            recorder = None
            if fmt == "float16":
                # build (or load) the float16 store first so its token store can be watched
                eng = _cached_engine(lm, corpus, NestConfig(), 800, cache)
                recorder = SearchRecorder(eng.token_store, args.max_searches)
                recorder.__enter__()
            try:
                report = run_eval(
                    lm, "qa", items, corpus, systems=["ra-nest"], max_new_tokens=args.max_new_tokens,
                    cache_dir=cache, key_format=fmt, progress=False,
                )  # fmt: skip
            finally:
                if recorder is not None:
                    recorder.__exit__()
                    calls = recorder.calls
            elapsed = time.perf_counter() - t0
            path = cached_store_path(lm, corpus, -2, 800, cache, fmt)
            total, key_bytes, files = store_bytes(path)
            store = Datastore.load(path, lm)
            summary = report["systems"]["ra-nest"]
            rows[fmt] = {
                "path": str(path),
                "bytes_per_token": total / store.n_tokens,
                "key_bytes_per_token": key_bytes / store.n_tokens,
                "files": files,
                "n_tokens": store.n_tokens,
                "run_s": elapsed,
                **{k: summary.get(k) for k in QUALITY},
                "support_shares": summary.get("support_shares"),
            }
            if fmt == "float16":
                ref_store = store
            print(name, fmt, json.dumps({k: rows[fmt][k] for k in ("bytes_per_token", *QUALITY)}), flush=True)
        assert ref_store is not None, "--formats must include float16 (the reference)"
        for fmt in formats:
            store = Datastore.load(rows[fmt]["path"], lm)
            rows[fmt]["top_r_overlap"] = neighbour_overlap(calls, ref_store, store)
            print(name, fmt, "overlap", round(rows[fmt]["top_r_overlap"], 4), flush=True)
        out["sets"][name] = {"questions": len(items), "searches_recorded": len(calls), "formats": rows}
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1))
    means = {
        fmt: {
            k: float(np.mean([out["sets"][s]["formats"][fmt][k] for s in out["sets"]]))
            for k in ("bytes_per_token", "answer_recall_strict", "f1", "attribution_ratio", "top_r_overlap")
        }
        for fmt in formats
    }
    out["mean_over_sets"] = means
    print(json.dumps(means, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
