"""Indexing benchmark (issue 4): key-building throughput vs the same model's base forward, disk, memory, load.

Both paths run the SAME length-sorted, padded batches in the same dtype, interleaved batch by batch:
the base forward is the decoder stack alone (no LM head, no hidden states kept); key building is what
:class:`~nest_integrations.store.KeyEncoder` does (hidden states of the key layer → float16 → host
arrays). Then the whole :meth:`Datastore.build` + ``save`` + ``load`` are timed, the bytes on disk
counted (everything in the store folder), and the process' peak RSS reported.

    python benchmarks/bench_index.py --dtype bfloat16 --out docs/bench_index.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from nest_integrations import Document, load_model
from nest_integrations.chunks import chunks_from_documents
from nest_integrations.datastore import Datastore


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev200" / "corpus_full.jsonl"
    ap.add_argument("--corpus", default=str(default))
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N documents")
    ap.add_argument("--sample-every", type=int, default=4, help="compare base vs keys on every N-th batch")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(dtype=args.dtype)
    recs = [json.loads(line) for line in open(args.corpus, encoding="utf-8")][: args.limit]
    docs = [Document(r["id"], r["text"], {"title": r.get("title", "")}) for r in recs]
    chunks = chunks_from_documents(docs)
    rss_after_load = _rss_mb()

    # 1) interleaved per batch: base forward vs key building, same batches
    store = Datastore(lm, chunks)
    enc = store.encoder
    toks = [enc.tokenize(c.text) for c in store.chunks]
    n_tokens = sum(len(t[0]) for t in toks)
    batches = enc.batches(toks)
    sampled = sum(len(toks[i][0]) for b in batches[:: args.sample_every] for i in b)
    results: list = [None] * len(toks)
    t_base = t_keys = 0.0
    with torch.inference_mode():
        enc._run(batches[0], toks, results, None)  # warm-up
        enc.body(*[x for x in enc.padded_batch(batches[0], toks)], use_cache=False)
        for b in batches[:: args.sample_every]:
            ids, mask = enc.padded_batch(b, toks)
            t = time.perf_counter()
            enc.body(input_ids=ids, attention_mask=mask, use_cache=False)
            t_base += time.perf_counter() - t
            t = time.perf_counter()
            enc._run(b, toks, results, None)
            t_keys += time.perf_counter() - t

    # 2) the real thing: build (tokenize, size check, keys, passage embeddings), save, load
    t = time.perf_counter()
    built = Datastore.build(lm, chunks, progress=False)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    built.passage_retriever("dense")
    passages_s = time.perf_counter() - t
    tmp = Path(tempfile.mkdtemp(prefix="nest-bench-"))
    try:
        t = time.perf_counter()
        built.save(tmp / "store")
        save_s = time.perf_counter() - t
        disk = sum(p.stat().st_size for p in (tmp / "store").rglob("*") if p.is_file())
        per_file = {p.name: p.stat().st_size for p in (tmp / "store").rglob("*") if p.is_file()}
        t = time.perf_counter()
        loaded = Datastore.load(tmp / "store", lm)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        Datastore.load(tmp / "store", lm, verify=False)
        load_noverify_s = time.perf_counter() - t
        assert len(loaded) == len(built)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {
        "command": "python benchmarks/bench_index.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"
        ),
        "machine": {"platform": platform.platform(), "cpu_count": __import__("os").cpu_count(), "threads": args.threads},
        "model": lm.model_id,
        "dtype": args.dtype,
        "documents": len(docs),
        "chunks": len(chunks),
        "tokens": n_tokens,
        "batches": len(batches),
        "compared_tokens": sampled,
        "base_forward_tok_per_s": sampled / t_base,
        "key_building_tok_per_s": sampled / t_keys,
        "key_vs_base_throughput": t_base / t_keys,
        "build_s": build_s,
        "build_tok_per_s": n_tokens / build_s,
        "passage_embeddings_s": passages_s,
        "save_s": save_s,
        "disk_bytes": disk,
        "disk_bytes_per_token": disk / n_tokens,
        "disk_files": per_file,
        "load_s_verified": load_s,
        "load_s_unverified": load_noverify_s,
        "peak_rss_mb": _rss_mb(),
        "rss_after_model_load_mb": rss_after_load,
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
