"""One suite for both backends: Qdrant Edge in tmp_path and the server path on local mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient

from qdrant import (
    IndexInUseError,
    SearchFilter,
    Store,
    StoreError,
    StoreUnavailableError,
    open_store,
)
from qdrant.edge import EdgeStore
from qdrant.schema import (
    IMAGES,
    SCHEMA_VERSION,
    WORDS,
    ImagePayload,
    camera_id,
    folder_id,
    folders_of,
    image_payload,
    image_point_id,
)
from qdrant.server import ServerStore

DIM = 16
LABELS = ("cat", "dog", "car")


def unit(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_images(n: int, seed: int = 0) -> tuple[list[str], list[ImagePayload], np.ndarray]:
    """n images spread over /data/{a,b}/<label>/ with seeded unit vectors."""
    rng = np.random.default_rng(seed)
    ids, payloads = [], []
    for i in range(n):
        label = LABELS[i % 3]
        top = "a" if i % 2 == 0 else "b"
        path = f"/data/{top}/{label}/img{i:04d}.jpg"
        ids.append(image_point_id(path))
        payloads.append(
            image_payload(
                path,
                label=label,
                width=32,
                height=24,
                size_bytes=1000 + i,
                mtime=1.7e9 + i,
                sha256=f"{i:064x}",
            )
        )
    return ids, payloads, unit(rng, n)


def open_backend(kind: str, tmp_path: Path) -> Store:
    if kind == "edge":
        return EdgeStore(tmp_path / "index")
    return ServerStore(QdrantClient(":memory:"), "memory://test")


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_backend(request.param, tmp_path)
    yield s
    s.close()


@pytest.fixture
def filled(store: Store) -> tuple[Store, list[str], np.ndarray]:
    ids, payloads, vecs = make_images(60)
    store.ensure_collections({"devise": DIM}, word_dim=DIM)
    store.upsert_images(ids, payloads, {"devise": vecs})
    return store, ids, vecs


# ------------------------------------------------------------------ schema


def test_folders_and_ids() -> None:
    assert folders_of("/a/b/c/x.jpg") == ["/a", "/a/b", "/a/b/c"]
    assert folders_of("/x.jpg") == []
    assert image_point_id("/a/b/../b/x.jpg") == image_point_id("/a/b/x.jpg")
    p = image_payload(
        "/a/b/x.jpg", label="l", width=1, height=2, size_bytes=3, mtime=4.0, sha256="h"
    )
    assert p["folder"] == "/a/b" and p["folders"] == ["/a", "/a/b"]
    # each folder's number, as the folder filter asks for it: an int64 Qdrant holds, one
    # per folder, the same whatever process computes it (no per-process hash seed)
    assert p.get("folder_ids") == [folder_id("/a"), folder_id("/a/b")]
    numbers = {folder_id(f"/photos/{i}") for i in range(1000)}
    assert len(numbers) == 1000 and all(0 <= n < 2**63 for n in numbers)
    code = "from qdrant.schema import folder_id; print(folder_id('/a/b'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert int(other.stdout) == folder_id("/a/b")


def test_every_camera_written_is_numbered_and_filtered_alike(
    filled: tuple[Store, list[str], np.ndarray],
) -> None:
    """Both backends add `camera_id` to a payload written with a camera, on upsert and on a
    payload merge (ingest's EXIF pass), and the camera filter finds the same photos (Edge
    by number, a server by name)."""
    store, ids, vecs = filled
    store.set_image_payloads([(ids[i], {"camera": f"Cam {i % 3}", "exif": 1}) for i in range(9)])
    store.set_image_payload(ids[9], {"camera": "Cam 0"})
    _, payloads, _ = make_images(60)
    p = dict(payloads[10]) | {"camera": "Cam 1"}
    store.upsert_images(ids[10:11], [p], {"devise": vecs[10:11]})
    numbered = {r.id: r.payload for r in store.scroll_images() if "camera" in r.payload}
    assert len(numbered) == 11
    assert all(p["camera_id"] == camera_id(p["camera"]) for p in numbered.values())
    assert all("camera_id" not in r.payload for r in store.scroll_images() if r.id not in numbered)
    hits = store.search_images("devise", vecs[0], 60, SearchFilter(cameras=("Cam 0", "Cam 1")))
    assert {h.id for h in hits} == {ids[i] for i in (0, 1, 3, 4, 6, 7, 9, 10)}
    assert store.count(IMAGES, SearchFilter(cameras=("Cam 2",))) == 3


# ------------------------------------------------------------------ filters and search


def test_search_unfiltered_is_exact(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, ids, vecs = filled
    q = vecs[7]
    hits = store.search_images("devise", q, 5)
    order = np.argsort(-(vecs @ q))[:5]
    assert [h.id for h in hits] == [ids[i] for i in order]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(-1.0 - 1e-6 <= h.score <= 1.0 + 1e-6 for h in hits)


def test_filter_by_label_folder_and_both(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, _, vecs = filled
    hits = store.search_images("devise", vecs[0], 100, SearchFilter(labels=("cat", "dog")))
    assert len(hits) == 40 and {h.payload["label"] for h in hits} == {"cat", "dog"}
    hits = store.search_images("devise", vecs[0], 100, SearchFilter(folder="/data/a/"))
    assert len(hits) == 30 and all(h.payload["path"].startswith("/data/a/") for h in hits)
    # a folder prefix that is not a whole path component matches nothing
    assert store.search_images("devise", vecs[0], 100, SearchFilter(folder="/data/a/ca")) == []
    hits = store.search_images(
        "devise", vecs[0], 100, SearchFilter(labels=("car",), folder="/data/b")
    )
    assert len(hits) == 10
    assert all(h.payload["label"] == "car" and h.payload["folder"] == "/data/b/car" for h in hits)
    assert store.count(IMAGES, SearchFilter(folder="/")) == 60


def test_score_threshold(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, _, vecs = filled
    all_hits = store.search_images("devise", vecs[3], 60)
    # a hair below the 10th score, so float rounding cannot drop it
    cut = all_hits[9].score - 1e-6
    hits = store.search_images("devise", vecs[3], 60, SearchFilter(min_score=cut))
    assert len(hits) >= 10 and all(h.score >= cut for h in hits)
    assert len(hits) < 60


def test_words_and_max_rank(store: Store) -> None:
    rng = np.random.default_rng(1)
    vecs = unit(rng, 50)
    store.ensure_collections({}, word_dim=DIM)
    store.upsert_words(list(range(50)), [f"w{i}" for i in range(50)], vecs, "test-words")
    hits = store.search_words(vecs[40], 3)
    assert hits[0].payload["word"] == "w40" and hits[0].payload["source"] == "test-words"
    hits = store.search_words(vecs[40], 50, SearchFilter(max_rank=9))
    assert len(hits) == 10 and all(h.payload["rank"] <= 9 for h in hits)
    assert store.count(WORDS) == 50
    assert store.count(WORDS, SearchFilter(max_rank=19)) == 20


def test_count_and_facet(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, _, _ = filled
    assert store.count(IMAGES) == 60
    assert store.count(IMAGES, SearchFilter(labels=("dog",))) == 20
    assert store.facet_labels() == {"cat": 20, "dog": 20, "car": 20}
    assert store.count_vectors("devise") == 60


def test_upsert_is_idempotent(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, _, _ = filled
    ids, payloads, vecs = make_images(60)
    store.upsert_images(ids, payloads, {"devise": vecs})
    assert store.count(IMAGES) == 60


def test_update_vectors_and_points_lacking_a_vector(
    filled: tuple[Store, list[str], np.ndarray],
) -> None:
    store, ids, vecs = filled
    store.ensure_collections({"devise": DIM, "conse": 8})
    assert store.vector_sizes() == {"devise": DIM, "conse": 8}
    conse = unit(np.random.default_rng(5), 10, 8)
    store.update_vectors(ids[:10], "conse", conse)
    assert store.count_vectors("conse") == 10
    assert store.count_vectors("devise") == 60
    hits = store.search_images("conse", conse[4], 60)
    # only the points that carry the vector are found by it
    assert len(hits) == 10 and hits[0].id == ids[4]
    # the update kept the payload and the other vector
    (rec,) = store.retrieve_images([ids[4]], with_vectors=True)
    assert rec.payload["label"] == "dog"
    assert set(rec.vectors) == {"devise", "conse"}
    np.testing.assert_allclose(rec.vectors["devise"], vecs[4], atol=1e-6)
    (rec,) = store.retrieve_images([ids[30]], with_vectors=True)
    assert set(rec.vectors) == {"devise"}


def test_dimension_mismatch_is_refused(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, _, _ = filled
    with pytest.raises(StoreError, match="dimension"):
        store.ensure_collections({"devise": DIM + 1})
    with pytest.raises(StoreError, match="no vector"):
        store.search_images("clip", np.ones(DIM, np.float32), 3)


def test_delete(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, ids, vecs = filled
    store.delete_images(ids[:5])
    store.delete_images(["00000000-0000-0000-0000-000000000000"])
    assert store.count(IMAGES) == 55
    assert store.retrieve_images(ids[:6]) and len(store.retrieve_images(ids[:6])) == 1
    assert ids[0] not in {h.id for h in store.search_images("devise", vecs[0], 10)}


def test_scroll_and_lookups(filled: tuple[Store, list[str], np.ndarray]) -> None:
    store, ids, _ = filled
    recs = list(store.scroll_images(batch=7))
    assert sorted(r.id for r in recs) == sorted(ids)
    assert all(r.vectors == {} for r in recs)
    recs = list(store.scroll_images(with_vectors=["devise"], flt=SearchFilter(labels=("car",))))
    assert len(recs) == 20 and all(r.vectors["devise"].shape == (DIM,) for r in recs)
    found = store.find_by_sha256([f"{3:064x}", "nope"])
    assert list(found) == [f"{3:064x}"] and found[f"{3:064x}"][0].id == ids[3]
    by_path = store.find_by_path(["/data/b/dog/img0001.jpg"])
    assert by_path["/data/b/dog/img0001.jpg"].id == ids[1]
    store.set_image_payload(ids[1], {"path": "/data/moved.jpg"})
    (rec,) = store.retrieve_images([ids[1]])
    assert rec.payload["path"] == "/data/moved.jpg" and rec.payload["label"] == "dog"


def test_meta_round_trip(store: Store) -> None:
    assert store.get_meta() == {}
    meta = {
        "schema": SCHEMA_VERSION,
        "models": {"devise": {"dim": 50, "id": "abc123", "words": "glove-6b-50d"}},
        "words": {"source": "glove-6b-50d", "dim": 50, "count": 400000},
    }
    store.set_meta(meta)
    assert store.get_meta() == meta
    meta["models"] = {}
    store.set_meta(meta)
    assert store.get_meta()["models"] == {}


def test_add_named_vector_to_existing_collection(store: Store) -> None:
    """A user ingests devise first and asks for clip later: nothing already stored is lost."""
    ids, payloads, vecs = make_images(30, seed=3)
    store.ensure_collections({"devise": DIM})
    store.upsert_images(ids, payloads, {"devise": vecs})
    store.ensure_collections({"devise": DIM, "clip": 12})
    assert store.count(IMAGES) == 30 and store.count_vectors("devise") == 30
    assert store.count_vectors("clip") == 0
    clip = unit(np.random.default_rng(9), 30, 12)
    store.update_vectors(ids, "clip", clip)
    assert store.search_images("clip", clip[2], 1)[0].id == ids[2]
    assert store.search_images("devise", vecs[2], 1)[0].id == ids[2]
    # asking again changes nothing
    store.ensure_collections({"devise": DIM, "clip": 12})
    assert store.count_vectors("clip") == 30
    store.drop_vector("clip")
    assert store.vector_sizes() == {"devise": DIM} and store.count(IMAGES) == 30


def test_missing_collections_read_empty(store: Store) -> None:
    assert store.count(IMAGES) == 0
    assert store.search_images("devise", np.ones(DIM, np.float32), 3) == []
    assert store.search_words(np.ones(DIM, np.float32), 3) == []
    assert store.facet_labels() == {}
    assert list(store.scroll_images()) == []
    assert store.vector_sizes() == {}


# ------------------------------------------------------------------ congruence


def test_backends_are_congruent(tmp_path: Path) -> None:
    """Same seeded data in both backends: identical ids and scores for exact search."""
    ids, payloads, vecs = make_images(300, seed=11)
    words = unit(np.random.default_rng(12), 200)
    queries = unit(np.random.default_rng(13), 8)
    filters = [
        None,
        SearchFilter(labels=("cat",)),
        SearchFilter(folder="/data/b"),
        SearchFilter(labels=("dog", "car"), folder="/data/a", min_score=0.0),
    ]
    results = []
    for kind in ("edge", "server"):
        with open_backend(kind, tmp_path) as s:
            s.ensure_collections({"devise": DIM}, word_dim=DIM)
            s.upsert_images(ids, payloads, {"devise": vecs})
            s.upsert_words(list(range(200)), [f"w{i}" for i in range(200)], words, "t")
            out = []
            for q in queries:
                for f in filters:
                    out.append([(h.id, h.score) for h in s.search_images("devise", q, 10, f)])
                out.append(
                    [(h.id, h.score) for h in s.search_words(q, 10, SearchFilter(max_rank=99))]
                )
            results.append(out)
    edge, server = results
    for a, b in zip(edge, server, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


# ------------------------------------------------------------------ edge specifics


def test_edge_reopen_keeps_data(tmp_path: Path) -> None:
    ids, payloads, vecs = make_images(20)
    with EdgeStore(tmp_path / "ix") as s:
        s.ensure_collections({"devise": DIM}, word_dim=DIM)
        s.upsert_images(ids, payloads, {"devise": vecs})
        s.set_meta({"schema": SCHEMA_VERSION})
    with EdgeStore(tmp_path / "ix") as s:
        assert s.count(IMAGES) == 20
        assert s.search_images("devise", vecs[5], 1)[0].id == ids[5]
        assert s.get_meta() == {"schema": SCHEMA_VERSION}
        assert s.vector_sizes() == {"devise": DIM}


def test_edge_second_open_names_the_pid(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    with EdgeStore(root) as s:
        s.ensure_collections({"devise": DIM})
        with pytest.raises(IndexInUseError, match=rf"index .*ix is in use by PID {os.getpid()}"):
            EdgeStore(root)
        assert (root / "store.pid").read_text().strip() == str(os.getpid())
    assert not (root / "store.pid").exists()
    EdgeStore(root).close()


def test_edge_wal_lock_error_is_translated(tmp_path: Path) -> None:
    """Even past our own lock, Edge's WAL lock error becomes IndexInUseError."""
    import qdrant_edge as qe

    root = tmp_path / "ix"
    with EdgeStore(root) as s:
        s.ensure_collections({"devise": DIM})
    shard = qe.EdgeShard.load(str(root / IMAGES))
    try:
        with pytest.raises(IndexInUseError, match="is in use by PID"):
            EdgeStore(root)
    finally:
        shard.close()


def test_edge_clears_temp_segments(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    with EdgeStore(root) as s:
        s.ensure_collections({"devise": DIM})
    junk = root / IMAGES / "temp_segments" / "half-built"
    junk.mkdir(parents=True)
    (junk / "data").write_bytes(b"x" * 1000)
    EdgeStore(root).close()
    assert not (root / IMAGES / "temp_segments").exists()


def test_edge_optimize_keeps_exact_results(tmp_path: Path) -> None:
    ids, payloads, vecs = make_images(200)
    with EdgeStore(tmp_path / "ix") as s:
        s.ensure_collections({"devise": DIM})
        s.upsert_images(ids, payloads, {"devise": vecs})
        s.delete_images(ids[:50])
        s.optimize()
        assert s.count(IMAGES) == 150
        hits = s.search_images("devise", vecs[120], 3)
        assert hits[0].id == ids[120]


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from qdrant.edge import EdgeStore
    from qdrant.schema import image_payload, image_point_id

    s = EdgeStore(Path(sys.argv[1]))
    s.ensure_collections({"devise": 16})
    rng = np.random.default_rng(0)
    n = 0
    while True:
        paths = [f"/k/{n + i}.jpg" for i in range(100)]
        ids = [image_point_id(p) for p in paths]
        pls = [image_payload(p, label="x", width=1, height=1, size_bytes=1, mtime=0.0,
                             sha256=str(n + i)) for i, p in enumerate(paths)]
        s.upsert_images(ids, pls, {"devise": rng.standard_normal((100, 16)).astype("float32")})
        n += 100
        print(n, flush=True)
    """
)


def test_edge_survives_sigkill_mid_upsert(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    committed = 0
    deadline = time.monotonic() + 30
    while committed < 1000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed >= 1000, "the writer did not get going"
    with EdgeStore(root) as s:
        # everything acknowledged before the kill is there (the WAL replays it)
        assert s.count(IMAGES) >= committed
        assert s.find_by_sha256(["0", str(committed - 1)]).keys() == {"0", str(committed - 1)}


# ------------------------------------------------------------------ server specifics


def test_server_unreachable_is_quick_and_clear() -> None:
    url = "http://127.0.0.1:1"
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="127.0.0.1:1"):
        open_store(None, url, api_key=None, timeout=2.0)
    assert time.monotonic() - start < 5


def test_open_store_picks_backend(tmp_path: Path) -> None:
    with open_store(tmp_path / "ix", None, None) as s:
        assert isinstance(s, EdgeStore) and s.describe() == str(tmp_path / "ix")
    with pytest.raises(ValueError):
        open_store(None, None, None)


def test_drop_words_allows_another_dimension(store: Store) -> None:
    store.ensure_collections({}, word_dim=DIM)
    store.upsert_words([0, 1], ["a", "b"], unit(np.random.default_rng(0), 2), "t")
    with pytest.raises(StoreError, match="dimension"):
        store.ensure_collections({}, word_dim=DIM * 2)
    store.drop_words()
    assert store.count(WORDS) == 0
    store.ensure_collections({}, word_dim=DIM * 2)
    store.upsert_words([0], ["a"], unit(np.random.default_rng(0), 1, DIM * 2), "t2")
    assert store.search_words(np.ones(DIM * 2, np.float32), 1)[0].payload["source"] == "t2"


def test_server_too_old_to_add_a_vector_is_refused_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    s = ServerStore(QdrantClient(":memory:"), "http://old-server:6333")
    ids, payloads, vecs = make_images(10)
    s.ensure_collections({"devise": DIM})
    s.upsert_images(ids, payloads, {"devise": vecs})

    def no_endpoint(*args: object, **kwargs: object) -> None:
        raise UnexpectedResponse(404, "Not Found", b"", httpx.Headers())

    monkeypatch.setattr(s.client, "create_vector_name", no_endpoint)
    with pytest.raises(StoreError, match=r"old-server.*v1\.18"):
        s.ensure_collections({"devise": DIM, "clip": 8})
    assert s.count(IMAGES) == 10 and s.vector_sizes() == {"devise": DIM}


def test_connect_passes_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant import server

    monkeypatch.setattr(server.ServerStore, "ping", lambda self: None)
    with server.connect("https://qdrant.invalid:6333", api_key="s3cret", timeout=2.0) as s:
        assert s.client.init_options["api_key"] == "s3cret"
        assert s.describe() == "https://qdrant.invalid:6333"


# ------------------------------------------------------------------ batch queries


def test_batch_search_is_each_query_alone(filled: tuple[Store, list[str], np.ndarray]) -> None:
    """One batch answers every query exactly as a single search would, filters included."""
    store, _, vecs = filled
    flt = SearchFilter(folder="/data/a", min_score=0.1)
    batch = store.search_images_batch("devise", vecs[:6], 4, flt)
    assert len(batch) == 6
    for q, hits in zip(vecs[:6], batch, strict=True):
        alone = store.search_images("devise", q, 4, flt)
        assert [h.id for h in hits] == [h.id for h in alone]
        assert all(h.score >= 0.1 and h.payload["path"].startswith("/data/a/") for h in hits)
    ids_only = store.search_images_batch("devise", vecs[:2], 3, with_payload=False)
    assert all(h.payload == {} for hits in ids_only for h in hits)
    assert store.search_images_batch("devise", vecs[:0], 3) == []
    with pytest.raises(StoreError, match="no vector 'nope'"):
        store.search_images_batch("nope", vecs[:1], 3)


def test_batch_search_backends_are_congruent(tmp_path: Path) -> None:
    ids, payloads, vecs = make_images(300, seed=21)
    queries = unit(np.random.default_rng(22), 12)
    results = []
    for kind in ("edge", "server"):
        with open_backend(kind, tmp_path) as s:
            s.ensure_collections({"devise": DIM})
            s.upsert_images(ids, payloads, {"devise": vecs})
            batch = s.search_images_batch("devise", queries, 7, SearchFilter(min_score=0.2))
            results.append([[(h.id, h.score) for h in hits] for hits in batch])
    for a, b in zip(*results, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def _near_pairs(n: int, d: int, seed: int) -> np.ndarray:
    """n unit vectors where each even row's next row is a near copy of it."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d)).astype(np.float32)
    v[1::2] = v[0::2] + 0.05 * rng.standard_normal((n // 2, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_edge_dup_vector_gets_a_graph_and_finds_the_same(tmp_path: Path) -> None:
    """`dup` is indexed by HNSW (an index made before it existed gets it on the next open),
    and its approximate batch search finds what exact search finds."""
    from qdrant.schema import DUP_VECTOR

    n = 24_000  # past the 10 MB indexing threshold at 128 d
    paths = [f"/d/{i}.jpg" for i in range(n)]
    ids = [image_point_id(p) for p in paths]
    pls = [
        image_payload(p, label="x", width=1, height=1, size_bytes=1, mtime=0.0, sha256=str(i))
        for i, p in enumerate(paths)
    ]
    dup = _near_pairs(n, 128, 5)
    devise = unit(np.random.default_rng(6), n)
    # an index as the previous version made it: indexing off, no per-vector graph settings
    old = qe.EdgeShard.create(
        str(tmp_path / "ix" / "images"),
        qe.EdgeConfig(
            vectors={"devise": qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=0),
        ),
    )
    for start in range(0, n, 4000):
        points = [
            qe.Point(ids[i], {"devise": devise[i].tolist()}, dict(pls[i]))
            for i in range(start, start + 4000)
        ]
        old.update(qe.UpdateOperation.upsert_points(points))
    old.flush()
    old.close()
    with EdgeStore(tmp_path / "ix") as s:
        s.ensure_collections({"devise": DIM, DUP_VECTOR: 128})
        s.update_vectors(ids, DUP_VECTOR, dup)
        s.optimize()
        vectors = json.loads((tmp_path / "ix" / "images" / "edge_config.json").read_text())
        assert vectors["vectors"][DUP_VECTOR]["hnsw_config"]["m"] == 16
        # every image vector now gets a graph and int8 copies (schema.IMAGE_INDEXING)
        assert vectors["vectors"]["devise"]["hnsw_config"]["m"] == 16
        assert vectors["vectors"]["devise"]["quantization_config"] is not None
        flt = SearchFilter(min_score=0.9)
        queries = dup[:400]
        exact = s.search_images_batch(DUP_VECTOR, queries, 5, flt, with_payload=False)
        approx = s.search_images_batch(DUP_VECTOR, queries, 5, flt, exact=False, with_payload=False)
        assert [{h.id for h in a} for a in approx] == [{h.id for h in e} for e in exact]
        # every point and its planted near copy, nothing else
        assert all(len(e) == 2 for e in exact)
        assert s.search_images("devise", devise[3], 1)[0].id == ids[3]
        assert s.count(IMAGES) == n and s.count_vectors(DUP_VECTOR) == n
