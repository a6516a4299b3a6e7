"""`devise` as a user runs it: the CLI in a process of its own (this checkout on its
path), and `devise serve` on a free loopback port, waited for and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.remote import RECORD_FILE, ServeRecord, find_server

REPO = Path(__file__).resolve().parents[1]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**(os.environ if env is None else env), "PYTHONPATH": str(REPO)}


def run(
    *args: str | bytes,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    text: bool = True,
    **kw: Any,
) -> subprocess.CompletedProcess[Any]:
    """`devise ARGS` to its end, output captured (str, or bytes with text=False); `env`
    (default: this process's) gets PYTHONPATH; the rest goes to subprocess.run."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True, text=text, timeout=timeout, env=_env(env), **kw,
    )  # fmt: skip


def spawn(*args: str, **kw: Any) -> subprocess.Popen[str]:
    """`devise ARGS` started and left running (`devise serve`, an ingest to kill)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args], text=True, env=_env(None), **kw
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_for_server(proc: subprocess.Popen[str], index: Path, seconds: float = 180) -> ServeRecord:
    """The record of `devise serve` on `index` once it listens (it must not exit first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "devise serve exited"
        record = find_server(index) if (index / RECORD_FILE).exists() else None
        if record is not None:
            return record
        time.sleep(0.3)
    raise AssertionError(f"devise serve wrote no serve.json in {seconds:.0f} s")
