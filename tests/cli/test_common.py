"""What the commands share: ``--set`` parsing, the config they build, reading ``--docs`` files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nest_integrations.cli import common, index
from nest_integrations.cli.common import build_config, key_value
from nest_integrations.cli.main import main
from nest_integrations.config import NestConfig
from nest_integrations.errors import ConfigError, NestError
from tests.cli.helpers import (
    run_cli,
)


def test_empty_docs_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("ask", "What is in there?", "--docs", str(empty), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("nest: error: ")]
    assert len(errors) == 1 and "no readable text" in errors[0] and str(empty) in errors[0]


def test_docs_with_only_unusable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin.md").write_bytes("café".encode("latin-1"))
    assert main(["ask", "q", "--docs", str(tmp_path)]) == 2
    (err,) = capsys.readouterr().err.splitlines()  # one line, naming every file and why
    assert err.startswith(f"nest: error: no readable text in {tmp_path}")
    assert f"{tmp_path / 'empty.txt'}: empty file" in err
    assert f"{tmp_path / 'latin.md'}: not UTF-8 text" in err


class _Stop(NestError):
    """Raised instead of loading the model: the files have been read by then."""


def test_ask_docs_and_index_read_a_folder_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same folder gives the same documents, chunks and warnings to ``ask --docs``, ``chat --docs`` and ``index``."""
    from tests.pdf import make_pdf

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.md").write_text("Backups run nightly.\n\nRestores are tested monthly.\n", encoding="utf-8")
    make_pdf(folder / "manual.pdf", [["The manual says backups are kept for a year."]])
    (folder / "blob.txt").write_bytes(b"\x00\x01binary")
    seen: dict[str, tuple[list[str], list[tuple[str, int, str]]]] = {}
    real = common.read_files

    def spy(paths: list[str], chunk_size: int):  # type: ignore[no-untyped-def]
        documents, chunks = real(paths, chunk_size)
        seen[command] = ([d.doc_id for d in documents], [(c.chunk_id, c.doc_offset, c.text) for c in chunks])
        raise _Stop("stop before the model")

    monkeypatch.setattr(common, "read_files", spy)
    outputs = {}
    for command, argv in {
        "ask": ["ask", "q", "--docs", str(folder)],
        "chat": ["chat", "--docs", str(folder)],
        "index": ["index", str(folder), "--out", str(tmp_path / "store")],
    }.items():
        monkeypatch.setattr(index, "read_files", spy)
        assert main(argv) == 1
        outputs[command] = capsys.readouterr().err
    assert seen["ask"] == seen["chat"] == seen["index"]
    doc_ids, chunks = seen["index"]
    assert doc_ids == [f"{folder / 'manual.pdf'}#page=0", str(folder / "notes.md")]  # the PDF is read by all three
    assert [c[0] for c in chunks] == [f"{folder / 'manual.pdf'}#page=0#0", f"{folder / 'notes.md'}#0"]
    warning = f"nest: warning: skipped {folder / 'blob.txt'}: binary file (contains NUL bytes), not text\n"
    assert all(out == warning + "nest: error: stop before the model\n" for out in outputs.values()), outputs


def test_set_values_parse_as_json_else_string() -> None:
    assert key_value("alpha=0.4") == ("alpha", 0.4)
    assert key_value("max-new-tokens=12") == ("max_new_tokens", 12)
    assert key_value("continue_in_token_mode=false") == ("continue_in_token_mode", False)
    assert key_value('stop=["\\n", "."]') == ("stop", ["\n", "."])
    assert key_value("max_span_tokens=null") == ("max_span_tokens", None)
    assert key_value("retriever=bm25") == ("retriever", "bm25")
    assert key_value("system_prompt=a=b") == ("system_prompt", "a=b")


def test_build_config_precedence_and_errors() -> None:
    import argparse

    args = argparse.Namespace(settings=[("method", "ra"), ("alpha", 0.4)], method="knnlm", max_new_tokens=7)
    cfg = build_config(args)
    assert (cfg.method, cfg.alpha, cfg.max_new_tokens) == ("knnlm", 0.4, 7)
    assert cfg.abstain == NestConfig().abstain  # no --abstain: the config default
    args = argparse.Namespace(settings=[("abstain", "retrieval")], method=None, max_new_tokens=None, abstain="off")
    assert build_config(args).abstain == "off"  # --abstain wins over --set
    with pytest.raises(ConfigError):
        build_config(argparse.Namespace(settings=[("tau", 0)], method=None, max_new_tokens=None))


def test_quiet_libraries_leaves_python_warnings_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI hides progress bars and info logs, not warnings: their causes are fixed instead."""
    import warnings

    monkeypatch.delenv("NEST_DEBUG", raising=False)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        common.quiet_libraries()
        assert warnings.filters == before


def test_a_run_on_files_gives_no_deprecation_warning(tmp_path: Path) -> None:
    """Reading .txt and .pdf files and splitting them warns about nothing (no langchain-community sunset warning)."""
    import subprocess
    import sys

    from tests.pdf import make_pdf

    (tmp_path / "a.md").write_text("Some notes.\n", encoding="utf-8")
    make_pdf(tmp_path / "m.pdf", [["Backups run nightly."]])
    code = (
        "import sys; from nest_integrations.cli.common import read_files; "
        f"docs, chunks = read_files([{str(tmp_path)!r}], 800); "
        "print(len(docs), len(chunks), 'langchain_community' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-W", "error::FutureWarning", "-c", code],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "2", "False"] and "Warning" not in proc.stderr
