"""Run every benchmark script in bench/ in turn; each prints its own figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).parent
    for script in sorted(here.glob("bench_*.py")):
        if script.name == "bench_all.py":
            continue
        print(f"== {script.name}", flush=True)
        # the repo root on the path: some benchmarks reuse the tests' image helpers
        env = dict(os.environ, PYTHONPATH=str(here.parent))
        subprocess.run([sys.executable, str(script)], check=False, env=env)
