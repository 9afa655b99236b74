"""``nest index --vector-store milvus:FILE.db`` and ``nest ask --store --vector-store``: the chunks kept in a
Milvus Lite collection through re-indexing (new, changed, pruned documents), answers retrieved from it with
spans exact in the files on disk, and the bad inputs (a bad target, a collection of another embedding size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import DEMO_FILE, SPAN_FIELDS, needs_model, run_cli

pytest.importorskip("langchain_milvus")
pytest.importorskip("milvus_lite")


def _ids(db: Path, collection: str = "nest_chunks") -> dict[str, str]:
    """chunk id → document id of the entities in the collection, read in another process (Milvus Lite lets
    one process at a time open a file, and this one would keep it)."""
    code = (
        "import json, sys; from pymilvus import MilvusClient; "
        "c = MilvusClient(uri=sys.argv[1], db_name='default'); c.load_collection(sys.argv[2]); "
        "rows = c.query(sys.argv[2], filter='pk != \"\"', output_fields=['pk', 'nest_doc_id'], consistency_level='Strong'); "
        "print(json.dumps({r['pk']: r['nest_doc_id'] for r in rows}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(db), collection], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stored(store: Path) -> dict[str, str]:
    """chunk id → document id of the datastore saved in ``store`` (read from its chunk table)."""
    from nest_integrations.datastore.persist import read_chunk_table, read_manifest

    rows = read_chunk_table(store, read_manifest(store), verify=True)
    return {r["chunk_id"]: r["doc_id"] for r in rows}


@needs_model
def test_index_and_ask_through_milvus(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    corpus = {r["id"]: r["text"] for r in map(json.loads, DEMO_FILE.read_text(encoding="utf-8").splitlines())}
    (docs / "super_bowl.txt").write_text(corpus["Super_Bowl_50"][:3000], encoding="utf-8")
    (docs / "tesla.txt").write_text(corpus["Nikola_Tesla"][:2000], encoding="utf-8")
    store, db = tmp_path / "store", tmp_path / "milvus" / "chunks.db"
    target = f"milvus:{db}"

    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--chunk-size", "500", "--vector-store", target)
    assert proc.returncode == 0, proc.stderr
    first = _ids(db)
    assert first == _stored(store) and len(set(first.values())) == 2
    assert f"collection nest_chunks: {len(first)} chunks ({len(first)} added, 0 deleted)" in proc.stdout

    proc = run_cli("ask", "Who won Super Bowl 50?", "--store", str(store), "--vector-store", target, "--json",
                   "--max-new-tokens", "24")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["passages"] and {p["chunk_id"] for p in payload["passages"]} <= set(first)
    assert payload["spans"], payload["text"]
    for s in payload["spans"]:
        assert SPAN_FIELDS <= set(s)
        on_disk = open(s["source"], encoding="utf-8", newline="").read()  # noqa: SIM115
        assert on_disk[s["doc_start"] : s["doc_end"]] == s["text"]

    # re-index: one file changed, one new, one removed (--prune): the collection follows the datastore
    sb = docs / "super_bowl.txt"
    sb.write_text(sb.read_text(encoding="utf-8").replace("Denver Broncos", "Denver Bronx"), encoding="utf-8")
    (docs / "tesla.txt").unlink()
    (docs / "note.txt").write_text("The library opens at nine on weekdays.", encoding="utf-8")
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--chunk-size", "500", "--prune",
                   "--vector-store", target)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "1 added, 1 updated, 0 unchanged, 1 deleted" in proc.stdout
    after = _ids(db)
    assert after == _stored(store) and len(set(after.values())) == 2
    assert f"collection nest_chunks: {len(after)} chunks" in proc.stdout
    assert all("tesla" not in d for d in after.values()) and any("note" in d for d in after.values())
    proc = run_cli("ask", "Who won Super Bowl 50?", "--store", str(store), "--vector-store", target, "--json",
                   "--max-new-tokens", "8")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    chunk_ids = {p["chunk_id"] for p in json.loads(proc.stdout)["passages"]}
    assert chunk_ids and chunk_ids <= set(after)

    # nothing changed: nothing rewritten
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--chunk-size", "500", "--vector-store", target)
    assert f"collection nest_chunks: {len(after)} chunks (0 added, 0 deleted)" in proc.stdout, proc.stdout


def test_bad_vector_store_targets(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Some text to index.", encoding="utf-8")
    for bad, says in (("chroma:x", "unknown vector store"), (f"milvus:{tmp_path / 'x.sqlite'}", "ending in .db")):
        proc = run_cli("index", str(tmp_path / "a.txt"), "--out", str(tmp_path / "store"), "--vector-store", bad)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr
    assert not (tmp_path / "store").exists()
    proc = run_cli("ask", "q", "--vector-store", f"milvus:{tmp_path / 'm.db'}")
    assert proc.returncode == 2 and "--vector-store needs --store" in proc.stderr


def test_collection_of_another_embedding_size(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    code = (
        "import sys; from pymilvus import DataType, MilvusClient; "
        "c = MilvusClient(uri=sys.argv[1], db_name='default'); "
        "s = c.create_schema(auto_id=False, enable_dynamic_field=True); "
        "s.add_field('pk', DataType.VARCHAR, is_primary=True, max_length=256); "
        "s.add_field('text', DataType.VARCHAR, max_length=1024); "
        "s.add_field('vector', DataType.FLOAT_VECTOR, dim=16); "
        "i = c.prepare_index_params(); i.add_index('vector', index_type='FLAT', metric_type='L2'); "
        "c.create_collection('sixteen', schema=s, index_params=i)"
    )
    made = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    (tmp_path / "a.txt").write_text("Some text to index.", encoding="utf-8")
    proc = run_cli("index", str(tmp_path / "a.txt"), "--out", str(tmp_path / "store"), "--vector-store", f"milvus:{db}",
                   "--collection", "sixteen")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "16-dimensional" in proc.stderr and "384" in proc.stderr
    assert not (tmp_path / "store").exists()  # refused before anything was written
