"""Run the benchmark scripts in bench/ in turn; each prints its own figures.

    python bench/bench_all.py [--record] [--only bench_store,bench_tags]

With --record each run also writes docs/bench/<script>.json (`--json`), and the docs'
benchmark page is written again from those files (docs/gen_bench.py). A script that fails
keeps its last recorded run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the flags a bench needs when run from here, or that keep a whole recorded run to about an
# hour on 2 cores (the others run on their defaults; each record names its command). The
# backbone bench's own defaults (both backbones, 640 images, 3 rounds) took more than an hour
# by themselves on a 2-core AMD EPYC, most of it in NNCF's calibration of resnet50's int8
DEFAULTS = {
    "bench_backbones": ["--backbones", "efficientnet_lite0", "--n", "256", "--rounds", "1"],
    "bench_scale": ["--points", "100000"],
    "bench_graph_build": ["--points", "30000"],
    # enough photos that the face stage's two workers pay their start (2.7 s each) back
    "bench_people": ["--n", "240"],
}


def scripts() -> list[Path]:
    return [p for p in sorted(HERE.glob("bench_*.py")) if p.name != "bench_all.py"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--record", action="store_true", help="write docs/bench/*.json and the page")
    p.add_argument("--only", default="", help="comma-separated script names (default: all)")
    args = p.parse_args()
    only = {n.strip().removesuffix(".py") for n in args.only.split(",") if n.strip()}
    known = {s.stem for s in scripts()}
    if only - known:
        p.error(
            f"no such bench: {', '.join(sorted(only - known))} (known: {', '.join(sorted(known))})"
        )
    failed = []
    for script in scripts():
        if only and script.stem not in only:
            continue
        print(f"== {script.name}", flush=True)
        cmd = [sys.executable, str(script), *DEFAULTS.get(script.stem, [])]
        if args.record:
            cmd += ["--json", str(ROOT / "docs" / "bench" / f"{script.stem}.json")]
        # the repo root on the path: some benchmarks reuse the tests' image helpers
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if subprocess.run(cmd, check=False, env=env, cwd=ROOT).returncode != 0:
            failed.append(script.name)
    if args.record:
        subprocess.run([sys.executable, str(ROOT / "docs" / "gen_bench.py")], check=True, cwd=ROOT)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
