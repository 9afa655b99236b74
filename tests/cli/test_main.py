"""``nest`` entry point: help, usage errors (one line, exit status 2), model errors (exit status 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nest_integrations.cli.main import main
from tests.cli.helpers import (
    assert_one_line_error,
    run_cli,
)


@pytest.mark.parametrize("command", [[], ["ask"], ["download-model"]])
def test_help_subprocess(command: list[str]) -> None:
    proc = run_cli(*command, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: nest" + (" " + command[0] if command else ""))
    if command == ["ask"]:
        for option in (
            "--docs",
            "--model",
            "--dtype",
            "--method",
            "--max-new-tokens",
            "--set",
            "--json",
            "--no-stream",
        ):
            assert option in proc.stdout
    if not command:
        assert "download-model" in proc.stdout and "ask" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "missing command"),
        (["bogus"], "invalid choice"),
        (["ask"], "QUESTION"),
        (["ask", "q", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["ask", "q", "--max-new-tokens", "many"], "--max-new-tokens"),
        (["ask", "q", "--method", "magic"], "--method"),
        (["ask", "q", "--dtype", "int3"], "--dtype"),
        (["ask", "q", "--set", "alpha"], "KEY=VALUE"),
        (["ask", "q", "--set", "no_such_key=1"], "unknown config key 'no_such_key'"),
        (["ask", "q", "--set", "alpha=7"], "alpha"),
        (["ask", "q", "--set", "retriever=magic"], "retriever"),
        (["ask", "q", "--bogus-flag"], "unrecognized arguments"),
        (["ask", "q", "--abstain", "sometimes"], "--abstain"),
        (["chat", "--abstain", "never"], "--abstain"),
        (["eval"], "give --questions FILE"),
        (["eval", "--sample", "--questions", "q.jsonl"], "--sample uses the sample questions"),
        (["eval", "--sample", "--corpus", "c.jsonl"], "--sample uses the sample questions"),
        (["ask", ""], "the question is empty"),
        (["ask", "   \n "], "the question is empty"),
    ],
)
def test_bad_usage_in_process(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nest: error: "), captured.err
    assert expected in lines[0]
    assert captured.out == ""


def test_bad_arguments_subprocess() -> None:
    line = assert_one_line_error(run_cli("ask", "q", "--max-new-tokens", "-3", timeout=120))
    assert "--max-new-tokens" in line and "nest ask --help" in line
    line = assert_one_line_error(run_cli("ask", "", timeout=120))
    assert "empty" in line


def test_missing_model(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = run_cli("ask", "Who won Super Bowl 50?", "--max-new-tokens", "24", env={"NEST_CACHE_DIR": str(cache)})
    line = assert_one_line_error(proc, code=1)
    assert "nest download-model" in line
    assert proc.stdout == ""


def test_missing_model_path(tmp_path: Path) -> None:
    proc = run_cli("ask", "q", "--model", str(tmp_path / "no-such-model"))
    line = assert_one_line_error(proc, code=1)
    assert "does not exist" in line
