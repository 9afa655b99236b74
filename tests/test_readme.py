"""The README's Python snippets run as written (in a folder holding the files they name)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from nest_integrations.demo import load_demo_documents

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_snippets() -> None:
    assert len(SNIPPETS) >= 4


SERVED = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def readme_server():
    """`nest serve` as the README starts it (demo corpus, no key), on a free port instead of 8000."""
    pytest.importorskip("fastapi")
    from tests.server.helpers import start_server, stop_server

    proc, url, _ = start_server(["--dtype", "float32"])
    yield url
    stop_server(proc)


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(
    index: int, default_lm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    docs = {d.doc_id: d.text for d in load_demo_documents()}
    (tmp_path / "tesla.txt").write_text(docs["Nikola_Tesla"], encoding="utf-8")
    notes = tmp_path / "notes"
    notes.mkdir()
    for doc_id in ("Super_Bowl_50", "Nikola_Tesla"):
        (notes / f"{doc_id}.txt").write_text(docs[doc_id], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = SNIPPETS[index]
    if SERVED in code:  # a client of `nest serve`: the server runs, on whatever port was free
        code = code.replace(SERVED, request.getfixturevalue("readme_server"))
    exec(compile(code, f"README.md snippet {index + 1}", "exec"), {"__name__": "__readme__"})
    assert os.getcwd() == str(tmp_path)
