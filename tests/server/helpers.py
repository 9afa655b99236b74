"""Start `nest serve` as a real process on a free loopback port (``--port 0``; the port is read from its log)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Sequence


def start_server(args: Sequence[str], timeout_s: float = 240) -> tuple[subprocess.Popen, str, list[str]]:
    """``nest serve --port 0 ARGS``: the process, its base URL and its log lines (kept up to date)."""
    cmd = [sys.executable, "-m", "nest_integrations.cli", "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    log: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if m and not url:
                url.append(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout_s):
        proc.kill()
        raise RuntimeError("the server did not start:\n" + "".join(log[-30:]))
    return proc, url[0], log


def stop_server(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    """SIGTERM, then wait (kill after ``timeout_s``); the exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
