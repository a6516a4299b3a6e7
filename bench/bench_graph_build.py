"""The background graph build as `devise serve` runs it (app/jobs/graph.py), measured from the
app's side: how long each step takes, and what a search costs meanwhile. Prints a table,
writes JSON, asserts nothing.

    python bench/bench_graph_build.py --index DIR --add N [--during M] [--json OUT]
    python bench/bench_graph_build.py --points N [--json OUT]

With --index, DIR is an index bench_scale.py built (`--index DIR --keep`), graph included:
N new points arrive as an ingest would write them (the case after an ingest into a large
library), M more while the graph is built (written again into the built copy at the swap).
With --points, a fresh index of N points with no graph (an index made before, or filled by
an older app's ingests): the whole graph is built in the background.

This process plays the app: the store open, GraphJob started as launch_app starts it, and
the main thread searching the clip and devise vectors without pause (or --rate a second),
each search tagged with the job's state when it ended (idle, copying, building, swapping,
built). The builder is the real child process (`python -m qdrant.builder`), under
SCHED_IDLE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import report
from bench_scale import (  # type: ignore[import-not-found]
    CHUNK,
    QUERIED,
    VECTORS,
    Library,
    around,
    centres,
    timed,
)
from bench_tags import cpu_name  # type: ignore[import-not-found]
from report import add_json_flag

from app.jobs.graph import GraphJob
from qdrant.edge import EdgeStore
from qdrant.graphbuild import tree_bytes
from qdrant.schema import image_point_id


def add_points(store: EdgeStore, start: int, stop: int) -> float:
    """Points start..stop of bench_scale's library (the same centres), as ingest writes them;
    the seconds the upserts took."""
    lib = Library(stop)
    cs = {name: centres(d, seed) for seed, (name, d) in enumerate(VECTORS.items())}
    rng = np.random.default_rng(start + 11)
    took = 0.0
    for a in range(start, stop, CHUNK):
        b = min(a + CHUNK, stop)
        vecs = {name: around(c, b - a, rng) for name, c in cs.items()}
        ids = [image_point_id(lib.path(i)) for i in range(a, b)]
        payloads = lib.payloads(a, b)
        took += timed(lambda: store.upsert_images(ids, payloads, vecs))  # noqa: B023
    return took


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, help="an index bench_scale.py built (with --keep)")
    ap.add_argument("--add", type=int, default=30_000, help="new points before the build")
    ap.add_argument("--during", type=int, default=2_000, help="new points during the build")
    ap.add_argument("--points", type=int, help="a fresh index of this many points instead")
    ap.add_argument(
        "--rate", type=float, default=0.0,
        help="searches a second (0: without pause, the worst case for the build)",
    )  # fmt: skip
    add_json_flag(ap)
    args = ap.parse_args()
    if (args.index is None) == (args.points is None):
        ap.error("give --index DIR or --points N")
    cpu = cpu_name()
    print(f"CPU: {cpu}", flush=True)
    tmp = None
    if args.points:
        tmp = Path(tempfile.mkdtemp(prefix="bench-graph-"))
        root = tmp / "ix"
        with EdgeStore(root) as store:
            store.ensure_collections(VECTORS)
            upsert = add_points(store, 0, args.points)
        n, added = args.points, 0
        print(f"fresh index, {n:,} points, no graph ({upsert:.0f} s)", flush=True)
    else:
        root = args.index
    qrng = np.random.default_rng(2)
    cs = {name: centres(d, seed) for seed, (name, d) in enumerate(VECTORS.items())}
    queries = {name: around(cs[name], 200, qrng) for name in QUERIED}
    out: dict[str, Any] = {"cpu": cpu}
    try:
        t0 = time.perf_counter()
        store = EdgeStore(root)
        out["open_s"] = time.perf_counter() - t0
        store.wait_warm()
        if args.index is not None:
            n = store.count("images")
            added = args.add
            out["add_s"] = add_points(store, n, n + added)
            print(f"{n:,} points with their graph; {added:,} added in {out['add_s']:.1f} s")
        out["points"], out["added"] = n, added
        out["index_gb"] = tree_bytes(root / "images") / 1e9
        out["pending_vectors"] = store.graph_pending()
        lock = threading.Lock()

        @contextlib.contextmanager
        def slot(doing: str) -> Iterator[None]:
            with lock:
                yield

        samples: list[tuple[str, str, float]] = []  # (state, vector, ms)

        def search_for(phase: str | None, until: threading.Event | None = None) -> None:
            """Searches without pause for 20 s (`phase`), or until `until`, each tagged with
            the job's state then."""
            end = time.perf_counter() + 20
            i = 0
            while (time.perf_counter() < end) if until is None else not until.is_set():
                name = QUERIED[i % 2]
                t = time.perf_counter()
                store.search_images(name, queries[name][i % 200], 10)
                took = time.perf_counter() - t
                samples.append((phase or job.state, name, took * 1e3))
                i += 1
                if args.rate:
                    time.sleep(max(0.0, 1 / args.rate - took))

        job = GraphJob(store, slot, settle_s=0.0)
        search_for("before")  # the new points searched exactly, no build running
        done = threading.Event()
        steps: dict[str, float] = {}

        def watch() -> None:
            last, since = job.state, time.perf_counter()
            wrote = False
            while not done.is_set():
                state = job.state
                if state != last:
                    steps[last] = steps.get(last, 0.0) + time.perf_counter() - since
                    last, since = state, time.perf_counter()
                if state == "building" and not wrote and args.during:
                    wrote = True  # an ingest meanwhile: replayed into the copy at the swap
                    with lock:
                        out["during_s"] = add_points(store, n + added, n + added + args.during)
                if job.builds or state == "failed" or job.wait_idle(0.01):
                    done.set()
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        t_build = time.perf_counter()
        job.start()
        watcher.start()
        search_for(None, until=done)
        out["total_s"] = time.perf_counter() - t_build
        job.stop()
        out["state"], out["message"] = job.state, job.message
        out["steps_s"] = {k: round(v, 2) for k, v in steps.items() if k != "idle"}
        search_for("after")  # from the new graph
        out["pending_after"] = store.graph_pending()
        table: dict[str, dict[str, Any]] = {}
        for state in ("before", "copying", "building", "swapping", "built", "after"):
            for name in QUERIED:
                ms = [m for s, v, m in samples if s == state and v == name]
                if ms:
                    table[f"{name}/{state}"] = {
                        "n": len(ms), "p50_ms": round(statistics.median(ms), 2),
                        "p95_ms": round(pct(ms, 95), 2), "max_ms": round(max(ms), 1),
                    }  # fmt: skip
        out["search"] = table
        store.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    report.run(__file__, main)
