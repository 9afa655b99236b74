"""Passage-stage latency on Milvus Lite against in-process faiss (issue 15's capacity plan).

The passage stage of NEST is one nearest-neighbour search of the question's embedding over the passage
vectors (384-dim here). This measures, for several collection sizes, in one process and on the same random
unit vectors and queries:

- Milvus Lite (the embedded engine behind ``--vector-store milvus:FILE.db``; the same client code talks to a
  Milvus cluster with a ``uri``): insert throughput, search latency p50 / p95 (one query, top-k), and the size
  of the database on disk;
- faiss ``IndexFlatIP`` in this process (what a datastore without a vector store uses): search latency p50 /
  p95 — the baseline of the same run.

Random vectors: latency of exact search does not depend on the values, and the figures are about the
engine, not about retrieval quality (which `nest eval` measures). Milvus Lite searches exhaustively (FLAT);
a cluster with an HNSW or IVF index is sub-linear, so these figures are an upper bound for it.

    python benchmarks/bench_milvus.py --sizes 10000,100000,1000000 --out docs/results/milvus-lite-cpu.json
    python benchmarks/bench_milvus.py --uri http://HOST:19530 --index HNSW   # the same on a Milvus server
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def run_size(
    n: int, dim: int, k: int, n_queries: int, seed: int, uri: str | None = None, index_type: str = "FLAT"
) -> dict[str, Any]:
    """One collection of ``n`` vectors: the figures as a dict (latencies in ms).

    ``uri``: a Milvus server (its collection ``nest_bench_passages`` is dropped afterwards); default: a Milvus
    Lite file in a temporary folder. ``index_type``: FLAT (exact; all Milvus Lite offers) or HNSW / IVF_FLAT
    on a server.
    """
    import faiss
    from pymilvus import DataType, MilvusClient

    rng = np.random.default_rng(seed)
    vectors = _unit(rng, n, dim)
    queries = _unit(rng, n_queries, dim)
    tmp = Path(tempfile.mkdtemp(prefix="nest-bench-milvus-"))
    out: dict[str, Any] = {"vectors": n, "dim": dim, "k": k, "queries": n_queries, "index": index_type}
    out["target"] = "server" if uri else "milvus-lite"
    name = "nest_bench_passages" if uri else "passages"
    client = None
    try:
        client = MilvusClient(uri=uri) if uri else MilvusClient(uri=str(tmp / "passages.db"), db_name="default")
        if uri and client.has_collection(name):
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type="IP")
        client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        t = time.perf_counter()
        for lo in range(0, n, 5000):
            rows = [{"pk": i, "vector": vectors[i].tolist()} for i in range(lo, min(n, lo + 5000))]
            client.insert(name, rows)
        client.flush(name)
        out["milvus_insert_s"] = time.perf_counter() - t
        out["milvus_insert_vectors_per_s"] = n / out["milvus_insert_s"]
        client.load_collection(name)
        client.search(name, data=[queries[0].tolist()], limit=k)  # warm-up
        lat, agree = [], 0
        flat = faiss.IndexFlatIP(dim)
        flat.add(vectors)
        flat_lat = []
        for q in queries:
            t = time.perf_counter()
            hits = client.search(name, data=[q.tolist()], limit=k)[0]
            lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            _, ids = flat.search(q[None, :], k)
            flat_lat.append(time.perf_counter() - t)
            agree += len({h.get("pk", h.get("id")) for h in hits} & set(ids[0].tolist()))
        out["milvus_search_ms_p50"] = _pct(lat, 50)
        out["milvus_search_ms_p95"] = _pct(lat, 95)
        out["faiss_flat_search_ms_p50"] = _pct(flat_lat, 50)
        out["faiss_flat_search_ms_p95"] = _pct(flat_lat, 95)
        out["top_k_agreement_with_faiss"] = agree / (k * n_queries)
        if not uri:
            out["milvus_disk_bytes"] = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        out["raw_vector_bytes"] = n * dim * 4
    finally:
        if client is not None:
            if uri and client.has_collection(name):
                client.drop_collection(name)
            client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated collection sizes")
    ap.add_argument("--dim", type=int, default=384, help="passage embedding width (the default embedder's)")
    ap.add_argument("--k", type=int, default=8, help="passages per search")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--uri", default=None, help="a Milvus server (default: Milvus Lite in a temporary file)")
    ap.add_argument("--index", default="FLAT", help="FLAT (Milvus Lite) | HNSW | IVF_FLAT (a server)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs = []
    for n in (int(s) for s in args.sizes.split(",")):
        run = run_size(n, args.dim, args.k, args.queries, args.seed, args.uri, args.index)
        runs.append(run)
        print(json.dumps(run), flush=True)
    result = {
        "command": "python benchmarks/bench_milvus.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "out"
        ),  # fmt: skip
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "runs": runs,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
