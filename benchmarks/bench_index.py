"""Indexing benchmark (issues 4 and 15): streamed build time, tokens/s vs the bare forward, peak RSS, bytes per
token of each key format, load time — at several corpus sizes, each build in a fresh process.

The corpus is every text of the dev data together (squad-dev200/corpus_full, nq-dev200/corpus, the WikiText
articles: ~0.9M tokens), cut to the first documents holding ``--sizes`` tokens (``full`` = all of it);
``--repeat K`` indexes it K times over (documents copied under new ids) to show that peak memory does not
grow with the corpus. Each size runs in its own child process, so its peak RSS (``ru_maxrss``) is its own:

1. model load, then (default model only) base forward vs key building on every ``--sample-every``-th batch,
   the same length-sorted padded batches, interleaved;
2. :func:`~nest_integrations.datastore.build_on_disk` (tokenize, size check, keys streamed to disk,
   passage embeddings, atomic save) — peak RSS is read right after it;
3. load (checksums verified / not), then conversion to each of ``--formats`` (bytes per token of every file).

``--model tiny576`` is a randomly initialised 2-layer Llama as wide as the default model (576): its keys are
as large, its forward ~15× cheaper, so 3× the corpus fits in minutes — it measures the memory of the build
path, not the speed of the default model.

    python benchmarks/bench_index.py --dtype bfloat16 --sizes 100000,full --out docs/results/index-cpu.json
    python benchmarks/bench_index.py --model tiny576 --sizes full --repeat 1,3 --formats none --out docs/results/index-rss-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("squad-dev200/corpus_full.jsonl", "nq-dev200/corpus.jsonl", "wikitext2-test/articles.jsonl")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_now_mb() -> dict[str, float]:
    """Resident and anonymous (heap) memory now, and the peak so far, in MB (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024
    return out


class _RssTrace:
    """Build events (``build_on_disk``'s ``_on_event``) → memory at that point: where the peak is reached."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.points: list[dict[str, Any]] = []

    def __call__(self, event: str, i: int) -> None:
        if event == "batch-written" or (event == "batch-committed" and i % 25):
            return
        self.points.append({"event": event, "i": i, "s": round(time.perf_counter() - self.t0, 1), **_rss_now_mb()})


def _model(name: str, dtype: str) -> Any:
    from nest_integrations import load_model

    if name == "default":
        return load_model(dtype=dtype)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from nest_integrations.models import LoadedModel, default_model_dir

    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype)).eval()
    return LoadedModel(model=model, tokenizer=tok, model_id="tiny-random-llama-576", path=Path("."), dtype=dtype)


def _corpus(lm: Any, tokens: int | None, repeat: int) -> list[Any]:
    from nest_integrations import Document

    docs, n = [], 0
    for src in SOURCES:
        for line in (DATA / src).open(encoding="utf-8"):
            r = json.loads(line)
            if tokens is not None and n >= tokens:
                break
            docs.append(Document(f"{src.split('/')[0]}:{r['id']}", r["text"], {"title": r.get("title", "")}))
            n += len(lm.tokenizer(r["text"], add_special_tokens=False)["input_ids"])
    return [Document(d.doc_id + (f"#{k}" if k else ""), d.text, d.metadata) for k in range(repeat) for d in docs]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One size in this process: the figures as a dict."""
    from nest_integrations.chunks import chunks_from_documents
    from nest_integrations.datastore import Datastore, build_on_disk

    torch.set_num_threads(args.threads)
    lm = _model(args.model, args.dtype)
    rss_model = _rss_mb()
    tokens = None if args.size == "full" else int(args.size)
    docs = _corpus(lm, tokens, args.repeat_one)
    chunks = chunks_from_documents(docs)
    out: dict[str, Any] = {"size": args.size, "repeat": args.repeat_one, "documents": len(docs), "chunks": len(chunks)}
    out["rss_after_model_load_mb"] = rss_model
    if args.model == "default" and args.sample_every > 0:
        probe = Datastore(lm, chunks[: max(1, len(chunks) // args.sample_every)])
        enc = probe.encoder
        toks = [enc.tokenize(c.text) for c in probe.chunks]
        batches = enc.batches(toks)
        t_base = t_keys = 0.0
        sampled = 0
        with torch.inference_mode():
            enc.encode_batch(batches[0], toks)  # warm-up
            for b in batches:
                ids, mask = enc.padded_batch(b, toks)
                t = time.perf_counter()
                enc.body(input_ids=ids, attention_mask=mask, use_cache=False)
                t_base += time.perf_counter() - t
                t = time.perf_counter()
                enc.encode_batch(b, toks)
                t_keys += time.perf_counter() - t
                sampled += sum(len(toks[i][0]) for i in b)
        out.update(
            compared_tokens=sampled,
            base_forward_tok_per_s=sampled / t_base,
            key_building_tok_per_s=sampled / t_keys,
            key_vs_base_throughput=t_base / t_keys,
        )
        del probe, toks, batches
    tmp = Path(tempfile.mkdtemp(prefix="nest-bench-index-"))
    try:
        t = time.perf_counter()
        trace = _RssTrace()
        trace("start", 0)
        store = build_on_disk(
            tmp / "store", lm, chunks, documents=docs, progress=False, max_tokens=10**9, _on_event=trace
        )
        build_s = time.perf_counter() - t
        trace("built", 0)
        out["rss_trace"] = trace.points
        out["peak_rss_build_mb"] = _rss_mb()
        out["tokens"] = store.n_tokens
        out["build_s"] = build_s
        out["build_tok_per_s"] = store.n_tokens / build_s
        out["built_key_format"] = store.key_format.name  # what build_on_disk's "auto" chose
        out["formats"] = {store.key_format.name: _disk(tmp / "store", store.n_tokens)}
        del store
        t = time.perf_counter()
        Datastore.load(tmp / "store", lm)
        out["load_s_verified"] = time.perf_counter() - t
        t = time.perf_counter()
        loaded = Datastore.load(tmp / "store", lm, verify=False)
        out["load_s_unverified"] = time.perf_counter() - t
        for fmt in [f for f in args.formats.split(",") if f and f != "none"]:
            t = time.perf_counter()
            loaded.save(tmp / fmt, key_format=fmt)
            conv = time.perf_counter() - t
            out["formats"][fmt] = dict(_disk(tmp / fmt, loaded.n_tokens), convert_s=conv)
            t = time.perf_counter()
            Datastore.load(tmp / fmt, lm)
            out["formats"][fmt]["load_s_verified"] = time.perf_counter() - t
            shutil.rmtree(tmp / fmt, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _disk(root: Path, n_tokens: int) -> dict[str, Any]:
    files = {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file()}
    total = sum(files.values())
    return {"disk_bytes": total, "bytes_per_token": total / n_tokens, "files": files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", choices=["default", "tiny576"])
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="100000,full", help="comma-separated token counts, or 'full'")
    ap.add_argument("--repeat", default="1", help="comma-separated: index the corpus this many times over")
    ap.add_argument("--formats", default="int8,pq96,pq144,pq192", help="key formats converted to (or 'none')")
    ap.add_argument("--sample-every", type=int, default=8, help="compare base vs keys on 1/N of the chunks (0: off)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeat-one", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    runs = []
    for size in args.sizes.split(","):
        for rep in (int(r) for r in args.repeat.split(",")):
            cmd = [
                sys.executable, __file__, "--child", "--size", size, "--repeat-one", str(rep), "--model", args.model,
                "--dtype", args.dtype, "--threads", str(args.threads), "--formats", args.formats,
                "--sample-every", str(args.sample_every),
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                raise SystemExit(f"size {size} x{rep} failed:\n{proc.stderr[-3000:]}")
            run = json.loads(line[7:])
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "formats"}), flush=True)
            for fmt, f in run["formats"].items():
                print(f"  {fmt}: {f['bytes_per_token']:.1f} bytes/token", flush=True)
    out = {
        "command": "python benchmarks/bench_index.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if v is not None and k not in ("out", "child", "size", "repeat_one")
        ),  # fmt: skip
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads},
        "model": args.model,
        "dtype": args.dtype,
        "runs": runs,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
