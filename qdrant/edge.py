"""Qdrant Edge backend: Qdrant's engine in process, one shard directory per collection.

Layout under the index root:
    root/images/        the `images` shard
    root/words/         the `words` shard
    root/meta.json      the meta document, replaced atomically
    root/store.pid      PID of the process holding the index, flock-ed while open
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import qdrant_edge as qe

from qdrant import graphbuild
from qdrant.base import BaseStore, Points, VectorRows, with_vector
from qdrant.errors import IndexInUseError, StoreError
from qdrant.filters import SearchFilter, score_threshold, to_edge
from qdrant.schema import (
    CAMERA_ID,
    DUP_HNSW_EF,
    DUP_VECTOR,
    EDGE_IMAGE_INDEXES,
    EDGE_ON_DISK_INDEXES,
    FOLDER_IDS,
    IMAGE_INDEXING,
    IMAGES,
    INDEX_FROM_POINTS,
    LINKED_INDEXES,
    ON_DISK_INDEXES,
    PRINCIPAL_INDEX,
    VECTOR_NAMES,
    WORD_VECTOR,
    WORDS,
    IndexKind,
    abs_posix,
    camera_id,
    folder_id,
    folders_of,
    indexing_threshold_kb,
    with_numbers,
)
from qdrant.store import (
    SCROLL_BATCH,
    UPSERT_BATCH,
    Hit,
    Matrix,
    Record,
    Vector,
    WithVectors,
    as_vector,
    point_id_str,
)

log = logging.getLogger(__name__)

META_FILE = "meta.json"
PID_FILE = "store.pid"
# Nothing reaches the disk with fsync until flush(); writes flush at most this often,
# so an OS crash loses at most this much (a killed process loses nothing: the WAL replays).
FLUSH_INTERVAL_S = 10.0
_WAL_LOCKED = "Kind(WouldBlock)"
_EXISTS_DIFFERENTLY = "already exists with different parameters"


_MEMORY = {"cold": qe.Memory.Cold, "cached": qe.Memory.Cached, "pinned": qe.Memory.Pinned}


def _placement(persisted: str | None = None) -> qe.Memory:
    """Where the int8 copies and the graphs live. A new shard: mapped and not read at open
    (Edge's Cold), then read into the page cache by a background thread (_warm, started by
    EdgeStore._start_warming).
    Edge's Cached reads them whole while it opens: 14.4 s to reopen 1,000,000 points
    against 2.3 s for Cold, the same files (README, "A million photos"). Pinned: read into
    RAM. A shard keeps the placement it was built with (`persisted`, from its config): a
    change makes Edge rebuild every graph at the next optimize()."""
    if persisted in _MEMORY:
        return _MEMORY[persisted]
    if not IMAGE_INDEXING.graphs_mapped:
        return qe.Memory.Pinned
    return qe.Memory.Cached if IMAGE_INDEXING.populate_at_open else qe.Memory.Cold


def _hnsw(dim: int, memory: qe.Memory, name: str = "") -> qe.HnswIndexConfig:
    ix = IMAGE_INDEXING
    return qe.HnswIndexConfig(
        m=ix.m,
        ef_construct=ix.ef_construct,
        full_scan_threshold=ix.full_scan_kb(dim, name),
        payload_m=ix.payload_m_of(name),
        memory=memory,  # the graph too: see _placement
    )


def _quantization(memory: qe.Memory) -> qe.ScalarQuantizationConfig:
    return qe.ScalarQuantizationConfig(
        qe.ScalarType.Int8, quantile=IMAGE_INDEXING.quantile, memory=memory
    )


def _vector_params(
    size: int, memory: qe.Memory | None = None, name: str = ""
) -> qe.EdgeVectorParams:
    """Image vector `name`'s params, its int8 copies and graph placed at `memory`; with none,
    a words vector's (never indexed: see _optimizers)."""
    if memory is None:
        return qe.EdgeVectorParams(size=size, distance=qe.Distance.Cosine)
    return qe.EdgeVectorParams(
        size=size,
        distance=qe.Distance.Cosine,
        on_disk=IMAGE_INDEXING.vectors_on_disk,
        quantization_config=_quantization(memory),
        hnsw_config=_hnsw(size, memory, name),
    )


def _optimizers(collection: str, sizes: dict[str, int]) -> qe.EdgeOptimizersConfig:
    # words: indexing_threshold=0 keeps optimize() from building anything, so optimize()
    # only merges segments and drops deleted points. images: a segment past
    # schema.INDEX_FROM_POINTS gets its graphs and int8 copies
    if collection == IMAGES:
        return qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb(sizes))
    return qe.EdgeOptimizersConfig(indexing_threshold=0)


def _images_config(sizes: dict[str, int], persisted: str | None = None) -> qe.EdgeConfig:
    """The images shard's config: schema.IMAGE_INDEXING for every vector, placed as the
    shard was (`persisted`) or, for a new one, as _placement says."""
    memory = _placement(persisted)
    return qe.EdgeConfig(
        vectors={k: _vector_params(d, memory, k) for k, d in sizes.items()},
        hnsw_config=_hnsw(max(sizes.values(), default=128), memory),
        optimizers=_optimizers(IMAGES, sizes),
    )


#: what a graph walk reads: each vector's int8 copies and graph links, warmed in this order
_WARM_FILES = ("vector_storage-{}/quantized.data", "vector_index-{}/links_compressed.bin")
_WARM_CHUNK = 8 << 20


def _warm(paths: list[Path], stop: threading.Event, done: threading.Event) -> None:
    """Reads `paths` through once, so that their pages are in the OS's cache when a graph
    walk needs them (Edge drops them from the cache when a shard closes). The GIL is
    released while each chunk is read."""
    buf = bytearray(_WARM_CHUNK)
    try:
        for path in paths:
            with contextlib.suppress(OSError), open(path, "rb", buffering=0) as f:
                while not stop.is_set() and f.readinto(buf):
                    pass
            if stop.is_set():
                return
    finally:
        done.set()


def search_params(
    exact: bool, k: int, name: str = "", *, acorn: bool = True, linked: bool = False
) -> qe.SearchParams:
    """Exact, or schema.IMAGE_INDEXING's graph walk with rescoring: with ACORN unless `acorn`
    is false (a filter whose folder or label has links of its own: EdgeStore._acorn), and on
    a graph built with those links (`linked`) only for a filter narrower than
    `acorn_max_selectivity_linked`. A segment without a graph (a small index, or one whose
    graph is not built yet) is scanned exactly either way."""
    if exact:
        return qe.SearchParams(exact=True)
    ix = IMAGE_INDEXING
    widest = ix.acorn_max_selectivity_linked if linked else None
    return qe.SearchParams(
        hnsw_ef=max(DUP_HNSW_EF if name == DUP_VECTOR else ix.hnsw_ef, k),
        quantization=qe.QuantizationSearchParams(rescore=True, oversampling=ix.oversampling),
        acorn=qe.AcornSearchParams(enable=ix.acorn and acorn, max_selectivity=widest),
    )


_IndexParams = (
    qe.KeywordIndexParams | qe.IntegerIndexParams | qe.FloatIndexParams | qe.GeoIndexParams
)


def _index_schema(field: str, kind: IndexKind) -> _IndexParams:
    """A payload index's params: mapped or in RAM, and whether its big values get links of
    their own in the graphs (schema.LINKED_INDEXES)."""
    links = field in LINKED_INDEXES
    if kind == "keyword":
        on_disk = True if field in EDGE_ON_DISK_INDEXES else None
        return qe.KeywordIndexParams(on_disk=on_disk, enable_hnsw=links)
    if kind == "lookup":
        principal = field == PRINCIPAL_INDEX or None
        return qe.IntegerIndexParams(
            lookup=True, range=False, is_principal=principal, enable_hnsw=links
        )
    if kind == "integer":
        return qe.IntegerIndexParams(enable_hnsw=links)
    if kind == "float":
        return qe.FloatIndexParams(enable_hnsw=links)
    return qe.GeoIndexParams(enable_hnsw=links)


def _links_or_order(params: object) -> tuple[bool, bool]:
    """Whether an index's values get links of their own in the graphs (Qdrant's default:
    yes) and order the points (no). An index made before both were set builds links for
    every value past the full-scan threshold, dates and places included, at the next
    graph build; made again, only folders and labels do."""
    links = getattr(params, "enable_hnsw", None)
    return (links is None or bool(links), bool(getattr(params, "is_principal", None)))


#: per number field, the image points that lack it: written before it existed
_LACKING: dict[str, qe.Filter] = {
    FOLDER_IDS: qe.Filter(must=[qe.IsEmptyCondition(FOLDER_IDS)]),
    CAMERA_ID: qe.Filter(
        must=[qe.IsEmptyCondition(CAMERA_ID)], must_not=[qe.IsEmptyCondition("camera")]
    ),
    VECTOR_NAMES: qe.Filter(must=[qe.IsEmptyCondition(VECTOR_NAMES)]),
}


def _number_of(field: str, payload: dict[str, Any]) -> int | tuple[int, ...]:
    """What number field `field` of a point with `payload` holds: its folders' numbers (from
    `path` where a very old point lacks `folders`), or its camera's."""
    if field == FOLDER_IDS:
        folders = payload.get("folders")
        if not isinstance(folders, list):
            folders = folders_of(str(payload.get("path", "")))
        return tuple(folder_id(str(f)) for f in folders)
    return camera_id(str(payload.get("camera", "")))


def _may_be_stranded(
    shard: qe.EdgeShard, exact: bool, edge_filter: qe.Filter | None, threshold: float | None
) -> bool:
    """Whether a search that came back with fewer than k hits may have been a graph walk
    stranded among points its filter refuses, rather than every match: a filtered search
    with no score floor, not exact, on a shard whose graph is built (with none, the search
    was exact already)."""
    return (
        not exact
        and edge_filter is not None
        and threshold is None
        and shard.info().indexed_vectors_count > 0
    )


def _page(
    shard: qe.EdgeShard,
    flt: qe.Filter | None,
    offset: qe.PointId | None,
    batch: int,
    with_vector: bool | list[str],
    with_payload: bool = True,
) -> tuple[list[qe.Record], qe.PointId | None]:
    """One page of the points of `shard` matching `flt`, with their payloads, from `offset`;
    and the next page's offset (None after the last)."""
    raw, offset = shard.scroll(
        qe.ScrollRequest(
            offset=offset,
            limit=batch,
            filter=flt,
            with_payload=with_payload,
            with_vector=with_vector,
        )
    )
    return list(raw), offset


def _pages(
    shard: qe.EdgeShard,
    flt: qe.Filter | None,
    batch: int,
    with_vector: bool | list[str],
    with_payload: bool = True,
) -> Iterator[list[qe.Record]]:
    """Every point of `shard` matching `flt`, with its payload, a page at a time."""
    offset: qe.PointId | None = None
    while True:
        raw, offset = _page(shard, flt, offset, batch, with_vector, with_payload)
        yield raw
        if offset is None:
            return


def _replay(live: qe.EdgeShard, built: qe.EdgeShard, ids: Sequence[qe.PointId]) -> None:
    """Writes into `built` the image points `ids` as `live` holds them now: each one that
    exists with its payload and vectors, the others deleted (they were deleted meanwhile)."""
    for start in range(0, len(ids), UPSERT_BATCH):
        chunk = list(ids[start : start + UPSERT_BATCH])
        found = live.retrieve(chunk, with_payload=True, with_vector=True)
        points = [
            qe.Point(r.id, dict(r.vector) if isinstance(r.vector, dict) else {}, r.payload)
            for r in found
        ]
        if points:
            built.update(qe.UpdateOperation.upsert_points(points))
        have = {point_id_str(r.id) for r in found}
        gone = [i for i in chunk if point_id_str(i) not in have]
        if gone:
            built.update(qe.UpdateOperation.delete_points(gone))


_F = TypeVar("_F", bound=Callable[..., Any])


def _gated(method: _F) -> _F:
    """Runs an EdgeStore method holding the store's gate, which a graph swap takes while it
    closes one images shard and loads the next (EdgeStore.finish_graph_build): no call
    meets a closed shard. Edge holds the GIL in every call, so the gate costs no
    parallelism."""

    @functools.wraps(method)
    def gated(self: EdgeStore, *args: Any, **kwargs: Any) -> Any:
        with self._gate:
            return method(self, *args, **kwargs)

    return cast(_F, gated)


class _PidLock:
    """An exclusive flock on root/store.pid, which holds the owner's PID for messages.

    flock conflicts between two opens in the same process too, so a second EdgeStore on
    the same root fails here, before Edge's own WAL lock, with a message naming the PID.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / PID_FILE
        self._file: IO[str] | None = None

    def acquire(self, root: Path) -> None:
        f = open(self.path, "a+", encoding="ascii")  # held open, and locked, until release()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise IndexInUseError(
                f"index {root} is in use by PID {pid}; close that process or use another --index"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is None:
            return
        # unlink before unlocking, so nobody reads a PID that no longer holds the lock
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None


class EdgeStore(BaseStore):
    """The embedded store: Qdrant Edge shards under `root`, searched exactly.

    Opening takes an exclusive lock on `root`: a second open, from this process or
    another, raises IndexInUseError naming the holder's PID.
    """

    # words are small: four times an image batch a write
    _word_batch = UPSERT_BATCH * 4

    # the shared methods, each under the gate (_gated); scroll_images and scroll_words take
    # it a page at a time (_scroll)
    ensure_collections = _gated(BaseStore.ensure_collections)
    vector_sizes = _gated(BaseStore.vector_sizes)
    word_vector_sizes = _gated(BaseStore.word_vector_sizes)
    ensure_word_vector = _gated(BaseStore.ensure_word_vector)
    upsert_images = _gated(BaseStore.upsert_images)
    upsert_words = _gated(BaseStore.upsert_words)
    update_vectors = _gated(BaseStore.update_vectors)
    update_word_vectors = _gated(BaseStore.update_word_vectors)
    search_images = _gated(BaseStore.search_images)
    search_words = _gated(BaseStore.search_words)
    search_images_batch = _gated(BaseStore.search_images_batch)
    count = _gated(BaseStore.count)
    count_vectors = _gated(BaseStore.count_vectors)
    retrieve_images = _gated(BaseStore.retrieve_images)
    find_by_sha256 = _gated(BaseStore.find_by_sha256)
    find_by_path = _gated(BaseStore.find_by_path)
    find_words = _gated(BaseStore.find_words)

    def __init__(self, root: Path, *, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.root = Path(abs_posix(root))
        self._flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()
        self._dirty = False  # anything written since the last flush
        self._shards: dict[str, qe.EdgeShard] = {}
        # named vector sizes per collection; dropped whenever a vector is added or removed
        self._sizes_cache: dict[str, dict[str, int]] = {}
        # whether every image point carries its numbers (`folder_ids`, and `camera_id` where
        # it has a camera), per field; emptied by every write: _numbered
        self._numbered_cache: dict[str, bool] = {}
        # whether each image vector's graphs were built with links per folder and label:
        # _has_links (emptied by optimize())
        self._links_cache: dict[str, bool] = {}
        # meta.json's text, keyed by its (inode, mtime, size): get_meta
        self._meta_text: tuple[tuple[int, int, int], str] | None = None
        # the background read of the graphs (_start_warming)
        self._warm_thread: threading.Thread | None = None
        self._warm_stop = threading.Event()
        self._warmed = threading.Event()
        # held by every call that uses a shard, and by a graph swap (_gated)
        self._gate = threading.RLock()
        # while a graph is built in the background (begin_graph_build): the image points
        # written since the copy, and whether a write that names no points (a vector or a
        # payload index added or dropped) made the copy unusable
        self._journal: set[qe.PointId] | None = None
        self._journal_broken = False
        # the vectors graph_pending() last counted waiting, and the image points written
        # since: graph_build_due's bound (None: not counted since the last build)
        self._pending_seen: int | None = None
        self._written_since = 0
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _PidLock(self.root)
        self._lock.acquire(self.root)
        try:
            if graphbuild.recover(self.root, IMAGES):
                log.warning("%s: a graph swap was cut off; the index is as before it", self.root)
            for name in (IMAGES, WORDS):
                if self._shard_exists(name):
                    self._shards[name] = self._load(name)
        except BaseException:
            self._close_shards()
            self._lock.release()
            raise
        if IMAGES in self._shards:
            self._start_warming()

    # ---------------------------------------------------------------- lifecycle

    def describe(self) -> str:
        """The index directory."""
        return str(self.root)

    def _shard_exists(self, name: str) -> bool:
        path = self.root / name
        return path.is_dir() and any(path.iterdir())

    def _load(self, name: str) -> qe.EdgeShard:
        path = self.root / name
        # a killed optimize() leaves its half-built segments here and nothing removes them;
        # removing them is safe because this process holds root's lock
        shutil.rmtree(path / "temp_segments", ignore_errors=True)
        # the images shard is loaded with today's config, which Edge checks and persists: an
        # index made before the `dup` vector had a graph (or with indexing off) gets one
        sizes = self._persisted_sizes(name) if name == IMAGES else {}
        config = _images_config(sizes, self._persisted_memory(name)) if sizes else None
        try:
            return qe.EdgeShard.load(str(path), config)
        except Exception as e:
            if _WAL_LOCKED in str(e):
                raise IndexInUseError(
                    f"index {self.root} is in use by PID {self._holder_pid()}"
                ) from e
            raise StoreError(f"cannot open {path}: {e}") from e

    @_gated
    def graph_pending(self) -> int:
        """How many image vectors still wait for their graph: what `optimize()` would build.
        0 when every segment has one, or below the threshold: an index, or new points since
        the last build, of fewer than INDEX_FROM_POINTS points, which optimize() leaves
        as they are and exact search serves as fast."""
        shard = self._shard(IMAGES)
        sizes = self._sizes(IMAGES)
        if shard is None or not sizes:
            return 0
        info = shard.info()
        if info.points_count < INDEX_FROM_POINTS:
            return 0
        # every point carries most vectors; a segment is indexed as a whole
        have = sum(self.count_vectors(v) for v in sizes)
        pending = max(0, have - int(info.indexed_vectors_count))
        self._pending_seen, self._written_since = pending, 0
        return pending if pending >= INDEX_FROM_POINTS * len(sizes) else 0

    def _holder_pid(self) -> str:
        try:
            return (self.root / PID_FILE).read_text(encoding="ascii").strip() or "unknown"
        except OSError:
            return "unknown"

    @_gated
    def flush(self) -> None:
        """Flush every shard to disk (fsync)."""
        for shard in self._shards.values():
            shard.flush()
        self._last_flush = time.monotonic()
        self._dirty = False

    def _write(
        self, shard: qe.EdgeShard, op: qe.UpdateOperation, ids: Sequence[qe.PointId] | None = None
    ) -> None:
        """Applies `op`; during a background graph build, notes the image points `ids` it
        writes (one that names none, a vector or an index, spoils the build's copy)."""
        shard.update(op)
        self._dirty = True
        self._numbered_cache.clear()
        if shard is not self._shards.get(IMAGES):
            return
        self._written_since += len(ids) if ids is not None else INDEX_FROM_POINTS
        if self._journal is not None:
            if ids is None or len(self._journal) + len(ids) > graphbuild.JOURNAL_MAX:
                self._journal_broken = True
            else:
                self._journal.update(ids)

    def _set_by_value(
        self, shard: qe.EdgeShard, field: str, groups: dict[Any, list[qe.PointId]]
    ) -> None:
        """Sets payload `field` of each group's points to its key (a tuple as a list), a
        batch of points to a write."""
        for value, ids in groups.items():
            payload = {field: list(value) if isinstance(value, tuple) else value}
            for start in range(0, len(ids), UPSERT_BATCH):
                chunk = ids[start : start + UPSERT_BATCH]
                self._write(shard, qe.UpdateOperation.set_payload(chunk, payload), chunk)
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self._flush_interval_s:
            self.flush()

    def _stop_warming(self) -> None:
        self._warm_stop.set()
        if self._warm_thread is not None:
            self._warm_thread.join(5)
        self._warm_thread = None
        self._warm_stop, self._warmed = threading.Event(), threading.Event()

    def _close_shards(self) -> None:
        self._stop_warming()
        shards, self._shards = self._shards, {}
        for shard in shards.values():
            shard.close()

    @_gated
    def close(self) -> None:
        """Flush what was written, close the shards and release the lock. Closing twice is
        harmless; a read-only session skips the flush (0.1 s of fsyncs for nothing)."""
        try:
            if self._shards and self._dirty:
                self.flush()
        finally:
            self._close_shards()
            self._lock.release()

    @_gated
    def optimize(self) -> None:
        """Merge segments, drop deleted points, and build every image vector's HNSW graph and
        int8 copies in segments past schema.INDEX_FROM_POINTS. Until it has run, queries scan
        exactly; an index made before these settings gets them here.

        Holds the GIL for its whole run: call it after ingest, never while serving.
        """
        for shard in self._shards.values():
            shard.optimize()
        self._links_cache.clear()
        self._pending_seen = None
        self.flush()

    # ---------------------------------------------------------------- background graphs

    @_gated
    def graph_build_due(self, left: int = 0) -> bool:
        """Whether a graph build would index anything: a graph was built with other links
        than today's, or the vectors of at least INDEX_FROM_POINTS points wait for one, past
        `left` (what the last build left waiting: points spread so that no segment got
        enough for a graph)."""
        if self._shard(IMAGES) is None:
            return False
        if self.graphs_outdated():
            return True
        need = INDEX_FROM_POINTS * len(self._sizes(IMAGES))
        if self._pending_seen is not None:
            # at most what waited at the last count, plus every vector written since: when
            # that is short, no count is needed (they visit every point: 0.8 s at 1,000,000)
            bound = self._pending_seen + self._written_since * len(self._sizes(IMAGES))
            if bound - left < need:
                return False
        pending = self.graph_pending()
        return pending > 0 and pending - left >= need

    def begin_graph_build(self) -> graphbuild.GraphBuild:
        """Copies the images shard for a graph build in another process (qdrant/graphbuild.py),
        and from now on notes the image points written, for finish_graph_build. The caller
        holds off every write until this returns; searches go on during the copy. Raises
        StoreError when the disk lacks room for the copy and its build."""
        with self._gate:
            shard = self._require(IMAGES)
            if self._journal is not None:
                raise StoreError(f"{self.root}: a graph build is already under way")
            self.flush()
            build = graphbuild.GraphBuild(
                self.root, dict(self._sizes(IMAGES)), int(shard.info().points_count)
            )
            self._journal, self._journal_broken = set(), False
        try:
            graphbuild.discard(self.root)
            build.work.mkdir(parents=True)
            graphbuild.check_disk(self.root / IMAGES, self.root)
            graphbuild.copy_shard(self.root / IMAGES, build.path)
        except BaseException:
            self.abandon_graph_build(build)
            raise
        return build

    def abandon_graph_build(self, build: graphbuild.GraphBuild) -> None:
        """Drops a build's copy and stops noting writes for it."""
        with self._gate:
            self._journal, self._journal_broken = None, False
        graphbuild.discard(build.root)

    def finish_graph_build(self, build: graphbuild.GraphBuild) -> bool:
        """Swaps in the shard the builder process built from begin_graph_build's copy, with
        the image points written since the copy written into it again; searches wait only
        for the swap (one shard load). False, and the copy dropped, when the index changed
        shape meanwhile (a vector or a payload index added or dropped, or more than
        graphbuild.JOURNAL_MAX points written): a new build should start. The caller holds
        off every write until this returns."""
        with self._gate:
            journal, broken = self._journal, self._journal_broken
            live = self._require(IMAGES)
            same = self._persisted_sizes(IMAGES) == build.sizes
        if journal is None or broken or not same:
            self.abandon_graph_build(build)
            return False
        built = qe.EdgeShard.load(str(build.path))
        try:
            _replay(live, built, sorted(journal, key=str))
            built.flush()
        finally:
            built.close()
        with self._gate:
            self._journal, self._journal_broken = None, False
            self._stop_warming()
            self._shards.pop(IMAGES).close()
            graphbuild.swap(self.root, IMAGES)
            try:
                self._shards[IMAGES] = self._load(IMAGES)
            except BaseException:
                graphbuild.unswap(self.root, IMAGES)
                self._shards[IMAGES] = self._load(IMAGES)
                raise
            finally:
                self._sizes_cache.pop(IMAGES, None)
                self._numbered_cache.clear()
                self._links_cache.clear()
                self._pending_seen = None
                self._start_warming()
        graphbuild.discard(self.root)
        return True

    # ---------------------------------------------------------------- schema

    def _shard(self, name: str) -> qe.EdgeShard | None:
        return self._shards.get(name)

    def _require(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is None:
            raise StoreError(f"collection {name!r} does not exist yet in {self.root}")
        return shard

    def _persisted_config(self, name: str) -> dict[str, Any]:
        # the shard persists its own config here and rewrites it when a vector is added
        path = self.root / name / "edge_config.json"
        if not path.exists():
            return {}
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return config

    def _persisted_sizes(self, name: str) -> dict[str, int]:
        vectors = self._persisted_config(name).get("vectors", {})
        return {str(k): int(v["size"]) for k, v in vectors.items()}

    def _persisted_memory(self, name: str) -> str | None:
        """Where the shard's int8 copies live, as its config says ("cold", "cached",
        "pinned"); None for a shard without quantised vectors."""
        for params in self._persisted_config(name).get("vectors", {}).values():
            scalar = ((params or {}).get("quantization_config") or {}).get("scalar") or {}
            if scalar.get("memory"):
                return str(scalar["memory"])
        return None

    def _start_warming(self) -> None:
        """Reads the images shard's int8 copies and graphs into the OS's cache in the
        background, when they are mapped without being read at open (Cold): the store
        opens at once and the first searches get faster as the pages arrive. Searches on
        the vectors the app queries first; `dup` (the duplicate scan) last."""
        if self._persisted_memory(IMAGES) != "cold":
            return
        order = sorted(self._sizes(IMAGES), key=lambda v: (v == DUP_VECTOR, v))
        segments = sorted((self.root / IMAGES / "segments").glob("*"))
        paths = [
            seg / pattern.format(vec)
            for pattern in _WARM_FILES
            for vec in order
            for seg in segments
            if (seg / pattern.format(vec)).exists()
        ]
        if not paths:
            return
        self._warm_thread = threading.Thread(
            target=_warm, args=(paths, self._warm_stop, self._warmed), name="devise-warm",
            daemon=True,
        )  # fmt: skip
        self._warm_thread.start()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Waits until the background read of the graphs (see _start_warming) is done; True
        when it is (or none was needed)."""
        if self._warm_thread is None:
            return True
        return self._warmed.wait(timeout)

    def _sizes(self, name: str, refresh: bool = False) -> dict[str, int]:
        # the cache is dropped by every change to a shard's vectors: never stale
        del refresh
        if name not in self._shards:
            return {}
        cached = self._sizes_cache.get(name)
        if cached is not None:
            return cached
        sizes = self._persisted_sizes(name)
        self._sizes_cache[name] = sizes
        return sizes

    def _exists(self, collection: str) -> bool:
        return collection in self._shards

    def _image_indexes(self) -> dict[str, IndexKind]:
        return EDGE_IMAGE_INDEXES

    def _create(
        self,
        name: str,
        vectors: dict[str, int],
        indexes: dict[str, IndexKind],
        shard_number: int | None,
        replication_factor: int | None,
    ) -> None:
        # an Edge shard is local: there are no shards or replicas to spread it over
        del shard_number, replication_factor
        if name == IMAGES:
            config = _images_config(vectors)
        else:
            config = qe.EdgeConfig(
                vectors={k: _vector_params(d) for k, d in vectors.items()},
                optimizers=_optimizers(name, vectors),
            )
        shard = qe.EdgeShard.create(str(self.root / name), config)
        self._shards[name] = shard
        self._dirty = True
        for field, kind in indexes.items():
            self._write(
                shard, qe.UpdateOperation.create_field_index(field, _index_schema(field, kind))
            )
        shard.flush()
        self._sizes_cache.pop(name, None)

    def _add_indexes(self, name: str, indexes: dict[str, IndexKind]) -> None:
        """Create the payload indexes a shard made by an older version lacks (the EXIF
        fields' came later), and make again those whose values get links, or order the
        points, differently today (_links_or_order); Edge indexes the points it already
        holds (once: 93 s for seven fields of 1,000,000 points, with the tests running
        beside it on a 2-core Xeon)."""
        shard = self._require(name)
        have = shard.info().payload_schema
        missing = {f: k for f, k in indexes.items() if f not in have}
        stale = {
            f: k
            for f, k in indexes.items()
            if name == IMAGES
            and f in have
            # a value per point (path, sha256) never makes a block big enough for links
            and f not in ON_DISK_INDEXES
            and _links_or_order(have[f].params) != _links_or_order(_index_schema(f, k))
        }
        for field in stale:
            self._write(shard, qe.UpdateOperation.delete_field_index(field))
        for field, kind in {**missing, **stale}.items():
            self._write(
                shard, qe.UpdateOperation.create_field_index(field, _index_schema(field, kind))
            )
        if missing or stale:
            shard.flush()

    def _add_vectors(self, name: str, vectors: dict[str, int]) -> None:
        shard = self._require(name)
        sizes = self._sizes(name)
        for vec, dim in vectors.items():
            if vec in sizes and sizes[vec] != dim:
                raise StoreError(
                    f"{self.root}: vector {vec!r} of {name!r} has dimension {sizes[vec]}, "
                    f"not {dim}; re-ingest after dropping it"
                )
            if vec not in sizes:
                # Edge adds a named vector to a live shard in place: existing points simply
                # lack it until update_vectors() sets it, so no copy is needed
                try:
                    self._write(
                        shard, qe.UpdateOperation.create_dense_vector(vec, dim, qe.Distance.Cosine)
                    )
                except Exception as e:
                    raise StoreError(f"cannot add vector {vec!r} to {name!r}: {e}") from e
                finally:
                    self._sizes_cache.pop(name, None)
        shard.flush()
        if name == IMAGES and set(vectors) - set(sizes):
            # a vector added in place gets the shard-wide config (no quantisation); reloading
            # with _images_config gives it its own
            shard.close()
            self._shards[name] = self._load(name)

    @_gated
    def drop_vector(self, name: str) -> None:
        """Remove named vector `name` from `images` and from every image point."""
        shard = self._require(IMAGES)
        if name in self.vector_sizes():
            self._write(shard, qe.UpdateOperation.delete_vector_name(name))
            self._sizes_cache.pop(IMAGES, None)
            if VECTOR_NAMES in shard.info().payload_schema:
                named = qe.FieldCondition(VECTOR_NAMES, match=qe.MatchValue(name))
                for raw in _pages(shard, qe.Filter(must=[named]), SCROLL_BATCH, False):
                    groups: dict[Any, list[qe.PointId]] = {}
                    for r in raw:
                        had = (r.payload or {}).get(VECTOR_NAMES) or []
                        groups.setdefault(tuple(v for v in had if v != name), []).append(r.id)
                    self._set_by_value(shard, VECTOR_NAMES, groups)
            shard.flush()

    @_gated
    def drop_words(self) -> None:
        """Delete the words collection (before loading another vocabulary or dimension)."""
        shard = self._shards.pop(WORDS, None)
        self._sizes_cache.pop(WORDS, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self.root / WORDS, ignore_errors=True)

    # ---------------------------------------------------------------- writes

    def _upsert(self, collection: str, batches: Iterable[Points]) -> None:
        shard = self._require(collection)
        for entries in batches:
            if collection == IMAGES:
                # every point of a batch carries the same vectors: name them for their filters
                entries = [
                    (pid, vecs, {**payload, VECTOR_NAMES: sorted(vecs)})
                    for pid, vecs, payload in entries
                ]
            points = [qe.Point(pid, vecs, payload) for pid, vecs, payload in entries]
            ids = [pid for pid, _, _ in entries]
            self._write(shard, qe.UpdateOperation.upsert_points(points), ids)
            self._maybe_flush()

    def _set_vectors(self, collection: str, name: str, batches: Iterable[VectorRows]) -> None:
        shard = self._require(collection)
        for ids, rows in batches:
            pvs = [qe.PointVectors(i, {name: row}) for i, row in zip(ids, rows, strict=True)]
            self._write(shard, qe.UpdateOperation.update_vectors(pvs), ids)
            if collection == IMAGES:
                self._name_vectors(shard, ids)
            self._maybe_flush()

    def _name_vectors(self, shard: qe.EdgeShard, ids: Sequence[qe.PointId]) -> None:
        """Sets VECTOR_NAMES on image points `ids` to the vectors they carry now."""
        groups: dict[Any, list[qe.PointId]] = {}
        for r in shard.retrieve(list(ids), with_payload=False, with_vector=True):
            have = r.vector if isinstance(r.vector, dict) else {}
            groups.setdefault(tuple(sorted(have)), []).append(r.id)
        self._set_by_value(shard, VECTOR_NAMES, groups)

    @_gated
    def delete_images(self, ids: Sequence[str]) -> None:
        """Delete image points by id."""
        shard = self._shard(IMAGES)
        if shard is None or not ids:
            return
        self._write(shard, qe.UpdateOperation.delete_points(list(ids)), ids)
        self._maybe_flush()

    @_gated
    def set_image_payload(self, point_id: str, payload: dict[str, Any]) -> None:
        """Merge `payload` into one image point's payload."""
        op = qe.UpdateOperation.set_payload([point_id], with_numbers(payload))
        self._write(self._require(IMAGES), op, [point_id])
        self._maybe_flush()

    @_gated
    def set_image_payloads(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Merge each payload into its image point's payload, one point at a time."""
        shard = self._require(IMAGES)
        for point_id, payload in updates:
            op = qe.UpdateOperation.set_payload([point_id], with_numbers(payload))
            self._write(shard, op, [point_id])
        self._maybe_flush()

    # ---------------------------------------------------------------- reads

    def _query(
        self, collection: str, using: str, vector: Vector, k: int, flt: SearchFilter | None
    ) -> list[Hit]:
        shard = self._shard(collection)
        if shard is None:
            return []
        threshold = score_threshold(flt)
        edge_filter = self._edge_filter(flt) if collection == IMAGES else to_edge(flt)
        acorn = collection != IMAGES or self._acorn(flt, using)
        linked = collection == IMAGES and self._has_links(using)
        query = qe.Query.Nearest(as_vector(vector), using=using)

        def run(exact: bool) -> list[Hit]:
            request = qe.QueryRequest(
                limit=k,
                query=query,
                filter=edge_filter,
                score_threshold=threshold,
                params=search_params(exact, k, using, acorn=acorn, linked=linked),
                with_payload=True,
                with_vector=False,
            )
            return [
                Hit(point_id_str(p.id), float(p.score), dict(p.payload or {}))
                for p in shard.query(request)
            ]

        # words: always exact (no graph); images: the graph once it is built
        exact = collection == WORDS
        hits = run(exact)
        if len(hits) < k and _may_be_stranded(shard, exact, edge_filter, threshold):
            # A filtered walk of the graph can strand itself among points the filter refuses
            # and return short (seen once in a full test run: a 1-in-15 filter on a 4,000-
            # point graph). Fewer than k hits is then either every match or a stranded walk:
            # the exact search tells which, from the payload index when the filter is narrow.
            again = run(True)
            if len(again) > len(hits):
                log.info("filtered graph search found %d of %d: searched exactly", len(hits), k)
                hits = again
        return hits

    def _numbered(self, field: str) -> bool:
        """Whether every image point carries number field `field` (FOLDER_IDS, or CAMERA_ID
        where it has a camera); points written before the field existed lack it until
        fill_numbers() (`devise ingest`) gives it to them. Known once per write: a count of
        the points without it, from the field's null index (8-11 ms at 1,000,000 points)."""
        if field not in self._numbered_cache:
            shard = self._shard(IMAGES)
            if shard is None or field not in shard.info().payload_schema:
                return False
            missing = shard.count(qe.CountRequest(exact=True, filter=_LACKING[field]))
            self._numbered_cache[field] = missing == 0
        return self._numbered_cache[field]

    def _edge_filter(self, flt: SearchFilter | None) -> qe.Filter | None:
        """`flt` for the images shard: a folder and cameras by number once every point has
        them."""
        if flt is None or not (flt.folder or flt.cameras):
            return to_edge(flt)
        return to_edge(
            flt,
            folder_ids=bool(flt.folder) and self._numbered(FOLDER_IDS),
            camera_ids=bool(flt.cameras) and self._numbered(CAMERA_ID),
        )

    def _built_payload_m(self, name: str) -> list[int]:
        """The `payload_m` each graph of image vector `name` was built with, from each
        segment's own HNSW config (Edge writes it beside the graph); none without a graph."""
        segments = self.root / IMAGES / "segments"
        configs = segments.glob(f"*/vector_index-{name}/hnsw_config.json")
        try:
            return [int(json.loads(p.read_text()).get("payload_m") or 0) for p in configs]
        except (OSError, ValueError):
            return []

    def _has_links(self, name: str) -> bool:
        """Whether every graph of image vector `name` was built with links per folder and
        label: not `dup`'s, nor a graph built before them, until optimize() rebuilds it."""
        if name not in self._links_cache:
            built = self._built_payload_m(name)
            self._links_cache[name] = bool(built) and min(built) > 0
        return self._links_cache[name]

    @_gated
    def graphs_outdated(self) -> bool:
        """Whether a graph was built with other links per payload value than today's
        (schema.IMAGE_INDEXING.payload_m: an index made before them); the next optimize()
        rebuilds it."""
        if self._shard(IMAGES) is None:
            return False
        return any(
            m != IMAGE_INDEXING.payload_m_of(name)
            for name in self._sizes(IMAGES)
            for m in self._built_payload_m(name)
        )

    def _acorn(self, flt: SearchFilter | None, name: str) -> bool:
        """Whether a walk of `name`'s graph filtered by `flt` needs ACORN's second hop: not
        when the graph has links per folder and label (_has_links) and the filter holds a
        folder or a single label whose points have their own (schema.LINKED_INDEXES: a
        value with between `full_scan_points` and `linked_share` of the points); the walk
        then stays among the filter's points (at 1,000,000 points: 2.5 ms against 11.0 with
        ACORN, recall 0.998 both). Counted from the payload index, 0.01 ms a condition."""
        ix = IMAGE_INDEXING
        shard = self._shard(IMAGES)
        if flt is None or shard is None or not (flt.folder or len(flt.labels) == 1):
            return True
        if not self._has_links(name):
            return True
        total = shard.info().points_count
        linked = [SearchFilter(folder=flt.folder)] if flt.folder else []
        linked += [SearchFilter(labels=flt.labels)] if len(flt.labels) == 1 else []
        for one in linked:
            request = qe.CountRequest(exact=False, filter=self._edge_filter(one))
            if ix.full_scan_points <= shard.count(request) <= total * ix.linked_share:
                return False
        return True

    @_gated
    def fill_numbers(self) -> int:
        """Give `folder_ids`, `camera_id` and VECTOR_NAMES to the image points written before
        they existed (their filters check names, and their vectors are counted point by
        point, until every point has them); returns how many points got one. One scroll of
        those points and a write per folder or camera: 118 s for the folders of 1,000,000
        points on a 2-core Xeon. A write moves a point out of its segment's graph, so the
        optimize() that `devise ingest` runs next rebuilds the graphs (294 s for one 50-d
        vector there)."""
        shard = self._shard(IMAGES)
        if shard is None:
            return 0
        done: set[qe.PointId] = set()
        for field in (FOLDER_IDS, CAMERA_ID):
            if self._numbered(field) or field not in shard.info().payload_schema:
                continue
            groups: dict[int | tuple[int, ...], list[qe.PointId]] = {}
            for raw in _pages(shard, _LACKING[field], SCROLL_BATCH, False):
                for r in raw:
                    groups.setdefault(_number_of(field, r.payload or {}), []).append(r.id)
            self._set_by_value(shard, field, groups)
            done.update(i for ids in groups.values() for i in ids)
        done.update(self._fill_vector_names(shard))
        if done:
            log.info("gave numbers to %d image points written before them", len(done))
        return len(done)

    def _fill_vector_names(self, shard: qe.EdgeShard) -> list[qe.PointId]:
        """Gives VECTOR_NAMES to the image points written before it existed (their vectors
        are counted point by point until every point has it); returns those points. One
        scroll of their ids per vector."""
        if self._numbered(VECTOR_NAMES) or VECTOR_NAMES not in shard.info().payload_schema:
            return []
        names: dict[qe.PointId, list[str]] = {}
        lacking = qe.IsEmptyCondition(VECTOR_NAMES)
        for vec in sorted(self._sizes(IMAGES)):
            flt = qe.Filter(must=[lacking, qe.HasVectorCondition(vec)])
            for raw in _pages(shard, flt, SCROLL_BATCH * 4, False, with_payload=False):
                for r in raw:
                    names.setdefault(r.id, []).append(vec)
        groups: dict[Any, list[qe.PointId]] = {}
        for pid, have in names.items():
            groups.setdefault(tuple(have), []).append(pid)
        self._set_by_value(shard, VECTOR_NAMES, groups)
        return list(names)

    def _has_vector(self, collection: str, name: str) -> bool:
        if self._shard(collection) is None:
            return False
        if name not in self._sizes(collection):
            raise StoreError(f"{self.root}: collection {collection!r} has no vector {name!r}")
        return True

    def _search_batch(
        self,
        name: str,
        mat: Matrix,
        k: int,
        flt: SearchFilter | None,
        exact: bool,
        with_payload: bool,
    ) -> list[list[Hit]]:
        # one query_batch for every row
        shard = self._shard(IMAGES)
        if shard is None:
            return [[] for _ in range(len(mat))]
        edge_filter = self._edge_filter(flt)
        threshold = score_threshold(flt)
        acorn = self._acorn(flt, name)
        linked = self._has_links(name)

        def run(rows: Matrix, exact: bool) -> list[list[Hit]]:
            params = search_params(exact, k, name, acorn=acorn, linked=linked)
            requests = [
                qe.QueryRequest(
                    limit=k,
                    query=qe.Query.Nearest(row.tolist(), using=name),
                    filter=edge_filter,
                    score_threshold=threshold,
                    params=params,
                    with_payload=with_payload,
                    with_vector=False,
                )
                for row in rows
            ]
            return [
                [Hit(point_id_str(p.id), float(p.score), dict(p.payload or {})) for p in points]
                for points in shard.query_batch(qe.QueryBatchRequest(requests))
            ]

        out = run(mat, exact)
        short = [i for i, hits in enumerate(out) if len(hits) < k]
        if short and _may_be_stranded(shard, exact, edge_filter, threshold):
            # as in _query: a filtered walk that came back short is either every match or
            # stranded among points the filter refuses; the exact search tells which
            for i, hits in zip(short, run(mat[short], True), strict=True):
                if len(hits) > len(out[i]):
                    out[i] = hits
        return out

    def _count(self, collection: str, flt: SearchFilter | None) -> int:
        shard = self._shard(collection)
        if shard is None:
            return 0
        edge_filter = self._edge_filter(flt) if collection == IMAGES else to_edge(flt)
        if edge_filter is None:
            # the id tracker's count: an exact count with no filter visits every point
            # (40 ms at 100,000 points, 0.03 ms this way)
            return int(shard.info().points_count)
        return int(shard.count(qe.CountRequest(exact=True, filter=edge_filter)))

    def _count_vectors(self, name: str) -> int:
        shard = self._shard(IMAGES)
        if shard is None:
            return 0
        if self._numbered(VECTOR_NAMES):
            # every point names its vectors: the index's counts (0.1 ms at 1,000,000)
            return self.facet_values(VECTOR_NAMES).get(name, 0)
        flt = qe.Filter(must=[qe.HasVectorCondition(name)])
        # exact, visiting every point (43 ms at 100,000): the estimate (exact=False) counted
        # re-inserted points' old vectors (tests/test_index_scale.py)
        return int(shard.count(qe.CountRequest(exact=True, filter=flt)))

    @_gated
    def facet_values(self, field: str, exact: bool = True) -> dict[str, int]:
        """Number of image points per value of keyword-indexed payload field `field`."""
        shard = self._shard(IMAGES)
        if shard is None or field not in shard.info().payload_schema:
            return {}
        # a facet returns at most `limit` values; no label set here comes near a million.
        # Edge keeps the index's counts in step with deletes and payload changes, so they are
        # the exact counts (tests/test_index_scale.py checks them against a scroll) at a
        # fraction of the cost: 0.05 ms against 12 ms at 100,000 points. `exact` only
        # matters to a server, whose counts are summed over shards and replicas.
        del exact
        response = shard.facet(qe.FacetRequest(field, limit=1_000_000, exact=False))
        # an exact facet still lists a value whose points were all deleted, with count 0
        return {str(h.value): int(h.count) for h in response.hits if h.count > 0}

    def _scroll(
        self, collection: str, with_vectors: WithVectors, flt: SearchFilter | None, batch: int
    ) -> Iterator[Record]:
        # a page at a time under the gate: a graph swap between two pages finds the same
        # points in the new shard, and the scroll goes on from its offset there
        offset: qe.PointId | None = None
        while True:
            with self._gate:
                shard = self._shard(collection)
                if shard is None:
                    return
                edge_filter = self._edge_filter(flt) if collection == IMAGES else to_edge(flt)
                raw, offset = _page(shard, edge_filter, offset, batch, with_vector(with_vectors))
                records = self._records(raw)
            yield from records
            if offset is None:
                return

    def _retrieve(
        self, ids: Sequence[str], with_vectors: WithVectors, with_payload: bool
    ) -> list[Record]:
        shard = self._shard(IMAGES)
        if shard is None:
            return []
        raw = shard.retrieve(
            list(ids), with_payload=with_payload, with_vector=with_vector(with_vectors)
        )
        return self._records(raw)

    def _matching(self, field: str, values: list[str]) -> list[Record]:
        shard = self._shard(IMAGES)
        if shard is None:
            return []
        flt = qe.Filter(must=[qe.FieldCondition(field, match=qe.MatchAny(values))])
        return [
            rec for raw in _pages(shard, flt, SCROLL_BATCH, False) for rec in self._records(raw)
        ]

    def _word_records(self, words: Sequence[str]) -> list[Record]:
        shard = self._shard(WORDS)
        if shard is None:
            return []
        flt = qe.Filter(must=[qe.FieldCondition("word", match=qe.MatchAny(list(words)))])
        raw, _ = shard.scroll(
            qe.ScrollRequest(
                limit=3 * len(words) + 1, filter=flt, with_payload=True, with_vector=[WORD_VECTOR]
            )
        )
        return self._records(raw)

    # ---------------------------------------------------------------- meta

    def get_meta(self) -> dict[str, Any]:
        """The meta document from root/meta.json ({} if absent).

        Its text is kept while the file's stat is unchanged: a search reads the meta several
        times, and open + read was a fifth of a served search's CPU (bench/bench_serve.py).
        Each call parses afresh, so a caller may change what it gets."""
        path = self.root / META_FILE
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._meta_text
        if cached is None or cached[0] != key:
            cached = (key, path.read_text(encoding="utf-8"))
            self._meta_text = cached
        try:
            data = json.loads(cached[1])
        except json.JSONDecodeError as e:
            raise StoreError(f"{path} is not valid JSON: {e}") from e
        return data if isinstance(data, dict) else {}

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace root/meta.json atomically (temp file, fsync, rename, fsync the directory)."""
        text = json.dumps(meta, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".meta.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / META_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        graphbuild.fsync_dir(self.root)
