"""Scale benchmark: N photos' points through the product's store layer, then query speed,
recall, memory, reopen, facet and upsert time. Prints a summary, writes JSON, asserts nothing.

    python bench/bench_scale.py --points N --json OUT [--queries Q] [--index DIR] [--keep]

OUT is {"points", "vectors": {name: dim}, "p50_ms": {kind: ms}, "recall_at_10": {kind: r},
"rss_gb", "reopen_s", "facet_ms", "upsert_s"}, plus a few figures more: "optimize_s",
"status_ms", "dup_scan_s", "first_query_ms" and "warm_s" (a search at once after the
reopen, and when the background read of the graphs ended), "exact_p50_ms" (the first 20
queries of each kind searched exactly, after the RSS is read: an exact scan maps in every
vector) and "cpu".
A kind is "<vector>/<filter>": the clip vector (512 d) and devise (50 d) under each
filter: unfiltered, label (1/20), folder prefix (a year, 1/10), date range (half a year of
ten, 1/20), camera (one maker's five models, 1/4), place (25 km around Paris, about 1/50)
and a combination (label, year and maker: 1/800).

Data: clustered unit vectors as bench_store.py makes them (100 centres, noise 0.6 per
dimension) for clip 512, devise 50, conse 50 and dup 128, each its own centres; payloads as
ingest writes them (path, folders, label, sizes, sha256, and EXIF: taken, camera, location).
Queries are fresh points around the same centres: a text or image query lands near the photos
it is about, not in empty space (a query from other centres is equidistant from everything,
which no photo library asks). Recall@10 is against numpy's exact top 10 under the same filter.

The build (upsert, then optimize(), which builds the graphs as `devise ingest` does) runs in
this process; the queries run in a fresh child process that reopens the index, so its peak
RSS is what a query process costs (the store and its answers, without the benchmark's own
copy of the vectors).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import report
from bench_tags import cpu_name  # type: ignore[import-not-found]
from report import add_json_flag

from qdrant.edge import EdgeStore
from qdrant.filters import GeoCircle, SearchFilter
from qdrant.schema import IMAGES, ImagePayload, image_payload, image_point_id

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
VECTORS = {"clip": 512, "devise": 50, "conse": 50, "dup": 128}
QUERIED = ("clip", "devise")
LABELS = [f"class{i:02d}" for i in range(20)]
CAMERAS = [f"Maker{i % 4} Model {i:02d}" for i in range(20)]
MAKER1 = tuple(c for c in CAMERAS if c.startswith("Maker1 "))
CITIES = [(48.86, 2.35), (51.51, -0.13), (40.71, -74.01), (35.68, 139.69), (-33.87, 151.21)]
CITIES += [(52.52, 13.40), (41.90, 12.50), (55.76, 37.62), (-23.55, -46.63), (1.35, 103.82)]
T0 = dt.datetime(2015, 1, 1, tzinfo=dt.UTC).timestamp()
YEAR = 365.25 * 86400
CHUNK = 10_000  # points generated and upserted at a time: bounds the payloads held


def normalise(x: F32) -> F32:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def centres(dim: int, seed: int) -> F32:
    return np.random.default_rng(seed).standard_normal((100, dim)).astype(np.float32)


def around(c: F32, n: int, rng: np.random.Generator) -> F32:
    x = c[rng.integers(0, len(c), n)]
    return normalise(x + 0.6 * rng.standard_normal(x.shape).astype(np.float32))


def haversine_km(lat: F32, lon: F32, at: tuple[float, float]) -> F32:
    la, lo, la0, lo0 = np.radians(lat), np.radians(lon), np.radians(at[0]), np.radians(at[1])
    h = np.sin((la - la0) / 2) ** 2 + np.cos(la) * np.cos(la0) * np.sin((lo - lo0) / 2) ** 2
    return (2 * 6371.0088 * np.arcsin(np.sqrt(h))).astype(np.float32)


class Library:
    """The synthetic library's attributes, one array per payload field, kept for the masks."""

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(4)
        self.n = n
        self.label = rng.integers(0, len(LABELS), n)
        self.taken = T0 + rng.uniform(0, 10 * YEAR, n)
        self.year = (2015 + (self.taken - T0) // YEAR).astype(np.int64)
        self.camera = rng.integers(0, len(CAMERAS), n)
        self.placed = rng.random(n) < 0.8
        city = np.array(CITIES)[rng.integers(0, len(CITIES), n)]
        # scattered over about +-100 km around each city
        self.lat = (city[:, 0] + rng.normal(0, 0.5, n)).astype(np.float32)
        self.lon = (city[:, 1] + rng.normal(0, 0.7, n)).astype(np.float32)

    def path(self, i: int) -> str:
        return f"/photos/{self.year[i]}/{LABELS[self.label[i]]}/{i:07d}.jpg"

    def payloads(self, start: int, stop: int) -> list[ImagePayload]:
        out = []
        for i in range(start, stop):
            p = image_payload(
                self.path(i),
                label=LABELS[self.label[i]],
                width=4032,
                height=3024,
                size_bytes=2_000_000 + i,
                mtime=float(self.taken[i]),
                sha256=f"{i:064x}",
            )
            when = dt.datetime.fromtimestamp(float(self.taken[i]), dt.UTC)
            p.update(taken=float(self.taken[i]), taken_iso=when.isoformat()[:19], exif=1)
            p["camera"] = CAMERAS[self.camera[i]]
            if self.placed[i]:
                p["location"] = {"lat": float(self.lat[i]), "lon": float(self.lon[i])}
            out.append(p)
        return out

    def filters(self) -> dict[str, tuple[SearchFilter | None, Mask | None]]:
        half = (T0 + 3 * YEAR, T0 + 3.5 * YEAR)
        paris = GeoCircle(CITIES[0][0], CITIES[0][1], 25.0)
        maker1 = self.camera % 4 == 1
        return {
            "unfiltered": (None, None),
            "label": (SearchFilter(labels=(LABELS[3],)), self.label == 3),
            "folder": (SearchFilter(folder="/photos/2019"), self.year == 2019),
            "date": (
                SearchFilter(taken_after=half[0], taken_before=half[1]),
                (self.taken >= half[0]) & (self.taken < half[1]),
            ),
            "camera": (SearchFilter(cameras=MAKER1), maker1),
            "place": (
                SearchFilter(near=paris),
                self.placed & (haversine_km(self.lat, self.lon, CITIES[0]) <= paris.radius_km),
            ),
            "combination": (
                SearchFilter(labels=(LABELS[3],), folder="/photos/2019", cameras=MAKER1),
                (self.label == 3) & (self.year == 2019) & maker1,
            ),
        }


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB. VmHWM, not getrusage's ru_maxrss:
    Linux carries ru_maxrss across exec, so a child would report the builder's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def memory() -> str:
    """Resident memory now, split into anonymous and file-backed (memory-mapped) pages."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024**2
    return ", ".join(f"{k} {v:.2f} GB" for k, v in fields.items())


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build(root: Path, n: int, n_queries: int, work: Path) -> dict[str, Any]:
    """Upsert n points, build the graphs, and write the queries and their exact answers."""
    lib = Library(n)
    ids = [image_point_id(lib.path(i)) for i in range(n)]
    cs = {name: centres(d, seed) for seed, (name, d) in enumerate(VECTORS.items())}
    rng = np.random.default_rng(1)
    kept: dict[str, F32] = {name: np.empty((n, VECTORS[name]), np.float32) for name in QUERIED}
    upsert_s = 0.0
    with EdgeStore(root) as store:
        store.ensure_collections(VECTORS)
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            vecs = {name: around(c, stop - start, rng) for name, c in cs.items()}
            for name in QUERIED:
                kept[name][start:stop] = vecs[name]
            payloads = lib.payloads(start, stop)
            upsert_s += timed(lambda: store.upsert_images(ids[start:stop], payloads, vecs))  # noqa: B023
        flush_s = timed(store.flush)
        print(f"upsert {n:,} points: {upsert_s:.1f} s (+ flush {flush_s:.1f} s)", flush=True)
        pending = store.graph_pending()
        optimize_s = timed(store.optimize)
        print(f"optimize (graphs for {pending:,} vectors): {optimize_s:.1f} s", flush=True)
    qrng = np.random.default_rng(2)
    queries = {name: around(cs[name], n_queries, qrng) for name in QUERIED}
    truth: dict[str, list[list[str]]] = {}
    for kind, (_, mask) in lib.filters().items():
        rows = np.arange(n) if mask is None else np.flatnonzero(mask)
        for name in QUERIED:
            scores = queries[name] @ kept[name][rows].T
            top = np.argsort(-scores, axis=1)[:, :10]
            truth[f"{name}/{kind}"] = [[ids[rows[j]] for j in t] for t in top]
        print(f"  {kind}: {len(rows):,} points match", flush=True)
    np.savez(work / "queries.npz", **queries)
    (work / "truth.json").write_text(json.dumps(truth))
    return {"upsert_s": upsert_s + flush_s, "optimize_s": optimize_s}


def reference(root: Path, n: int, n_queries: int, work: Path) -> None:
    """The queries and their exact answers for an index built before, by the store's exact
    search (the build's numpy reference needs the vectors, which only the build has)."""
    cs = {name: centres(d, seed) for seed, (name, d) in enumerate(VECTORS.items())}
    qrng = np.random.default_rng(2)
    queries = {name: around(cs[name], n_queries, qrng) for name in QUERIED}
    truth: dict[str, list[list[str]]] = {}
    with EdgeStore(root) as store:
        for kind, (flt, _) in Library(n).filters().items():
            for name in QUERIED:
                hits = store.search_images_batch(
                    name, queries[name], 10, flt, exact=True, with_payload=False
                )
                truth[f"{name}/{kind}"] = [[h.id for h in row] for row in hits]
    np.savez(work / "queries.npz", **queries)
    (work / "truth.json").write_text(json.dumps(truth))


def measure(root: Path, n: int, work: Path) -> dict[str, Any]:
    """In a fresh process: reopen, query, facet; the process's peak RSS."""
    lib = Library(n)
    filters = lib.filters()
    truth: dict[str, list[list[str]]] = json.loads((work / "truth.json").read_text())
    queries = dict(np.load(work / "queries.npz"))
    t = time.perf_counter()
    store = EdgeStore(root)
    reopen_s = time.perf_counter() - t
    print(f"  reopened in {reopen_s:.2f} s: {memory()}", flush=True)
    # a search at once, while the store reads its graphs into the OS's cache behind it
    t = time.perf_counter()
    store.search_images("clip", queries["clip"][0], 10)
    first_query_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    store.wait_warm(900)
    warm_s = time.perf_counter() - t + first_query_ms / 1000
    print(
        f"  first search {first_query_ms:.0f} ms; the graphs were read {warm_s:.1f} s after "
        "the open",
        flush=True,
    )
    p50: dict[str, float] = {}
    rec: dict[str, float] = {}
    with store:
        for kind, (flt, _) in filters.items():
            for name in QUERIED:
                key = f"{name}/{kind}"
                times, found = [], []
                for q in queries[name]:
                    t = time.perf_counter()
                    hits = store.search_images(name, q, 10, flt)
                    times.append(time.perf_counter() - t)
                    found.append({h.id for h in hits})
                p50[key] = round(statistics.median(times) * 1000, 3)
                rec[key] = round(
                    float(
                        np.mean(
                            [
                                len(f & set(tr)) / max(len(tr), 1)
                                for f, tr in zip(found, truth[key], strict=True)
                            ]
                        )
                    ),
                    4,
                )
                print(f"  {key:22s} p50 {p50[key]:7.2f} ms  recall@10 {rec[key]:.4f}", flush=True)
        facet = [timed(lambda: store.facet_values("camera", exact=True)) for _ in range(20)]
        # what `devise status` reads: points, and points per named vector
        status = [
            timed(lambda: [store.count(IMAGES)] + [store.count_vectors(v) for v in VECTORS])
            for _ in range(5)
        ]
        # the duplicate scan asks every point for its neighbours; a sample of 2,000 of them,
        # in the scan's batches of 256, scaled to every point
        sample = around(centres(128, 3), 2000, np.random.default_rng(5))
        t = time.perf_counter()
        for start in range(0, len(sample), 256):
            store.search_images_batch(
                "dup", sample[start : start + 256], 11, exact=False, with_payload=False
            )
        dup_scan_s = (time.perf_counter() - t) / len(sample) * n
        rss_gb = peak_rss_gb()
        print(f"  query process: {memory()}", flush=True)
        # before the graphs: the same queries, exact (20 of each: an exact scan is slow)
        exact_p50 = {
            f"{name}/{kind}": round(
                statistics.median(
                    timed(lambda q=q, f=flt, v=name: store.search_images_batch(v, q[None], 10, f))
                    for q in queries[name][:20]
                )
                * 1000,
                3,
            )
            for kind, (flt, _) in filters.items()
            for name in QUERIED
        }
    return {
        "p50_ms": p50,
        "recall_at_10": rec,
        "exact_p50_ms": exact_p50,
        "rss_gb": round(rss_gb, 3),
        "reopen_s": round(reopen_s, 3),
        "first_query_ms": round(first_query_ms, 1),
        "warm_s": round(warm_s, 1),
        "facet_ms": round(statistics.median(facet) * 1000, 3),
        "status_ms": round(statistics.median(status) * 1000, 3),
        "dup_scan_s": round(dup_scan_s, 1),
    }


def main() -> dict[str, object] | None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, required=True, help="how many photos' points")
    add_json_flag(ap)
    ap.add_argument("--queries", type=int, default=100, help="queries per kind (default 100)")
    ap.add_argument("--index", type=Path, help="build here (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep --index's store afterwards")
    ap.add_argument(
        "--reuse",
        type=Path,
        metavar="PREVIOUS_JSON",
        help="measure the index that a run with --index DIR --keep left, without building it "
        "again (after a change of search parameters); upsert_s and optimize_s are copied "
        "from PREVIOUS_JSON, and the reference answers come from the store's exact search",
    )
    ap.add_argument("--measure-only", type=Path, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.points < 1000:
        ap.error(f"--points must be at least 1000, not {args.points}")
    if args.measure_only is not None:
        assert args.index is not None
        out = measure(args.index, args.points, args.measure_only)
        (args.measure_only / "measured.json").write_text(json.dumps(out))
        return None
    print(f"CPU: {cpu_name()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_scale.") as tmp:
        work = Path(tmp)
        root = args.index or work / "index"
        if args.reuse is not None:
            if args.index is None or not args.index.is_dir():
                ap.error("--reuse needs --index DIR, the index a --keep run left")
            previous = json.loads(args.reuse.read_text())
            previous = previous.get("figures", previous)  # a --json record, or a bare dict
            if previous.get("points") != args.points:
                ap.error(f"--reuse {args.reuse} is of {previous.get('points')} points")
            built = {k: previous[k] for k in ("upsert_s", "optimize_s")}
            reference(root, args.points, args.queries, work)
            args.keep = True
        elif root.exists() and any(root.iterdir()):
            ap.error(f"--index {root} is not empty: give a new directory")
        else:
            built = build(root, args.points, args.queries, work)
        child = work / "measured.json"
        cmd = [sys.executable, __file__, "--points", str(args.points)]
        cmd += ["--index", str(root), "--measure-only", str(work)]
        subprocess.run(cmd, check=True)
        measured = json.loads(child.read_text())
        if args.index is not None and not args.keep:
            import shutil

            shutil.rmtree(args.index, ignore_errors=True)
    out = {
        "points": args.points,
        "vectors": VECTORS,
        **{k: measured[k] for k in ("p50_ms", "recall_at_10", "rss_gb", "reopen_s", "facet_ms")},
        "upsert_s": round(built["upsert_s"], 1),
        "optimize_s": round(built["optimize_s"], 1),
        "status_ms": measured["status_ms"],
        "exact_p50_ms": measured["exact_p50_ms"],
        "dup_scan_s": measured["dup_scan_s"],
        "first_query_ms": measured["first_query_ms"],
        "warm_s": measured["warm_s"],
        "cpu": cpu_name(),
    }
    worst = max(out["p50_ms"].values())
    low = min(out["recall_at_10"].values())
    print(
        f"{args.points:,} points: worst p50 {worst:.2f} ms, lowest recall@10 {low:.4f}, "
        f"RSS {out['rss_gb']:.2f} GB, reopen {out['reopen_s']:.2f} s, camera facet "
        f"{out['facet_ms']:.1f} ms, upsert {out['upsert_s']:.0f} s, optimize "
        f"{out['optimize_s']:.0f} s"
    )
    return out


if __name__ == "__main__":
    report.run(__file__, main)
