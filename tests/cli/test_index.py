"""``nest index`` and ``nest ask --store``: the datastore built, synced (new, changed, unchanged, pruned) and used."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import (
    DEMO_FILE,
    SPAN_FIELDS,
    needs_model,
    run_cli,
)


def _index_files(folder: Path) -> dict[str, str]:
    docs = {r["id"]: r["text"] for r in map(json.loads, DEMO_FILE.read_text(encoding="utf-8").splitlines())}
    texts = {"super_bowl.txt": docs["Super_Bowl_50"], "tesla.md": docs["Nikola_Tesla"].replace("\n", "\r\n")}
    for name, text in texts.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    return texts


def test_index_bad_input(tmp_path: Path) -> None:
    proc = run_cli("index", str(tmp_path), "--out", str(tmp_path / "store"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"nest: error: no readable text in {tmp_path}")
    assert f"{tmp_path}: folder holds no .txt, .md, .pdf files" in line
    assert not (tmp_path / "store").exists()  # nothing half-written
    (tmp_path / "x.txt").write_text("x", encoding="utf-8")
    proc = run_cli("ask", "q", "--store", str(tmp_path / "nostore"))
    assert proc.returncode == 2 and "no such datastore" in proc.stderr


@needs_model
def test_index_then_ask_from_store(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = _index_files(docs)
    store = tmp_path / "store"
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "2 documents" in proc.stdout and "2 added" in proc.stdout
    for bad in ("latin1.txt: not UTF-8", "empty.txt: empty file", "blob.txt: binary file"):
        assert bad in proc.stderr
    proc = run_cli("ask", "Who won Super Bowl 50?", "--store", str(store), "--json", "--max-new-tokens", "32")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    for s in payload["spans"]:
        assert SPAN_FIELDS <= set(s)
        on_disk = open(s["source"], encoding="utf-8", newline="").read()  # noqa: SIM115
        assert on_disk[s["doc_start"] : s["doc_end"]] == s["text"]
    assert payload["spans"], payload["text"]

    # re-index: one file changed, one unchanged, one new; --prune drops a removed file
    (docs / "super_bowl.txt").write_text(texts["super_bowl.txt"].replace("Denver Broncos", "Denver Bronx"), encoding="utf-8")
    (docs / "note.txt").write_text("The library opens at nine on weekdays.", encoding="utf-8")
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "1 added, 1 updated, 1 unchanged, 0 deleted" in proc.stdout
    (docs / "tesla.md").unlink()
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--prune")
    assert "0 added, 0 updated, 2 unchanged, 1 deleted" in proc.stdout and "2 documents" in proc.stdout

    # convert the keys to int8 in place; the answer's spans stay exact in the files
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--key-format", "int8")
    assert proc.returncode == 0, proc.stderr
    assert "int8 keys (0 added, 0 updated, 2 unchanged, 0 deleted)" in proc.stdout
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["key_format"]["name"] == "int8" and "keys.npy" not in manifest["files"]
    proc = run_cli("ask", "Who won Super Bowl 50?", "--store", str(store), "--json", "--max-new-tokens", "32")
    assert proc.returncode == 0, proc.stderr
    spans = json.loads(proc.stdout)["spans"]
    assert spans
    for s in spans:
        on_disk = open(s["source"], encoding="utf-8", newline="").read()  # noqa: SIM115
        assert on_disk[s["doc_start"] : s["doc_end"]] == s["text"]


def test_index_unknown_key_format(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("Backups run nightly.", encoding="utf-8")
    proc = run_cli("index", str(tmp_path), "--out", str(tmp_path / "store"), "--key-format", "int4")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown key format 'int4'" in proc.stderr and not (tmp_path / "store").exists()


@needs_model
def test_index_on_the_fly_keys(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _index_files(docs)
    store = tmp_path / "store"
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--key-mode", "on_the_fly")
    assert proc.returncode == 0, proc.stderr
    assert "keys on the fly (none stored)" in proc.stdout
    files = json.loads((store / "manifest.json").read_text())["files"]
    assert "keys.npy" not in files and "passages.npy" in files
    proc = run_cli("ask", "Who won Super Bowl 50?", "--store", str(store), "--json", "--max-new-tokens", "32")
    assert proc.returncode == 0, proc.stderr
    spans = json.loads(proc.stdout)["spans"]
    assert spans
    for s in spans:
        on_disk = open(s["source"], encoding="utf-8", newline="").read()  # noqa: SIM115
        assert on_disk[s["doc_start"] : s["doc_end"]] == s["text"]
    proc = run_cli("index", str(docs), "--out", str(store), "--quiet", "--key-mode", "precomputed")
    assert proc.returncode == 2 and "--rebuild" in proc.stderr
