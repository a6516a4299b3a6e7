"""What every bench writes with `--json OUT`: what it printed, its figures, and where it ran.

A bench adds the flag with `add_json_flag(parser)`, starts `rec = Recorder(__file__,
args.json)` and ends with `rec.save(figures)`: everything it prints still goes to the
terminal, and is kept line by line. At the end OUT gets

    {"bench": "bench_store", "command": "python bench/bench_store.py --n 1000",
     "date": "2026-12-06", "commit": "634c30a", "machine": {"cpu": ..., "cores": 2, ...},
     "output": ["CPU: AMD EPYC", ...], "figures": {...}}

`figures` is whatever dict the bench hands over (its own structured numbers, or nothing).
`docs/gen_bench.py` writes the docs' benchmark page from these files (`docs/bench/*.json`),
so that no table there is copied by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
# the CPU features that decide which precision paths run natively
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="also write what this run prints, with its CPU, date and commit, to OUT as JSON "
        "(docs/gen_bench.py builds the docs' benchmark page from docs/bench/*.json)",
    )


def machine() -> dict[str, Any]:
    """The CPU model, core count and precision-relevant flags, as lscpu and Linux report them."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    family = number = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            elif key.strip() == "cpu family":
                family = value.strip()
            elif key.strip() == "model":
                number = value.strip()
    info: dict[str, Any] = {
        "cpu": model,
        # "AMD EPYC" alone does not say which generation: family 25 model 1 is a Zen 3
        "family_model": f"{family}/{number}" if family else None,
        "cores": os.cpu_count(),
        "flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "python": platform.python_version(),
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def command_line(bench_file: str, argv: list[str]) -> str:
    """How the run was started, without the --json flag (it only says where this file went)."""
    kept: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith("--json="):
            kept.append(a)
    return " ".join(["python", f"bench/{Path(bench_file).name}", *kept])


class _Tee(io.TextIOBase):
    """Writes go to the terminal as before, and are kept."""

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.kept = io.StringIO()

    def write(self, s: str) -> int:
        self.terminal.write(s)
        self.kept.write(s)
        return len(s)

    def flush(self) -> None:
        self.terminal.flush()


class Recorder:
    """Keeps what the bench prints from now on; `save` writes it to `out` (when given).

    A bench starts one right after parsing its flags and saves at its end, so that a run that
    fails half way writes nothing (the page keeps the last whole run)."""

    def __init__(self, bench_file: str, out: Path | None) -> None:
        self.bench_file, self.out = bench_file, out
        self.tee: _Tee | None = None
        # the machines are shared: a busy one makes every figure slower, so say how busy
        self.load_start = os.getloadavg()[0]
        if out is not None:
            self.tee = _Tee(sys.stdout)
            sys.stdout = self.tee

    def save(self, figures: dict[str, Any] | None = None) -> None:
        if self.tee is None or self.out is None:
            return
        sys.stdout.flush()
        sys.stdout = self.tee.terminal
        lines = self.tee.kept.getvalue().rstrip("\n").split("\n")
        self.tee = None
        record = {
            "bench": Path(self.bench_file).stem,
            "command": command_line(self.bench_file, sys.argv[1:]),
            "date": dt.date.today().isoformat(),
            "commit": _commit(),
            "machine": machine(),
            "load_average": {
                "start": round(self.load_start, 2),
                "end": round(os.getloadavg()[0], 2),
            },
            "output": [line.rstrip() for line in lines],
            "figures": figures or {},
        }
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
        print(f"wrote {self.out}", file=sys.stderr)


def json_path(argv: list[str]) -> Path | None:
    """The --json OUT in argv, read before the bench's own parser (which declares it too)."""
    for i, a in enumerate(argv):
        if a == "--json" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--json="):
            return Path(a.split("=", 1)[1])
    return None


def run(bench_file: str, main: Callable[[], object]) -> None:
    """Run a bench's `main`, keeping what it prints for `--json` (and the dict it returns).

    A run that fails half way writes nothing: the page keeps the last whole run."""
    rec = Recorder(bench_file, json_path(sys.argv[1:]))
    result = main()
    rec.save(result if isinstance(result, dict) else None)
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
