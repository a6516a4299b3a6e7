"""Qdrant Edge backend: Qdrant's engine in process, one shard directory per collection.

Layout under the index root:
    root/images/        the `images` shard
    root/words/         the `words` shard
    root/faces/         the `faces` shard (one point per face found)
    root/meta.json      the meta document, replaced atomically
    root/store.pid      PID of the process holding the index, flock-ed while open
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from qdrant import graphbuild
from qdrant.base import BaseStore, Points, VectorRows, with_vector
from qdrant.edge_config import faces_config, images_config, words_config

# Under these names here, because tests patch qdrant.edge._index_schema and read
# qdrant.edge._links_or_order; the code below calls them by these names.
from qdrant.edge_config import index_schema as _index_schema
from qdrant.edge_config import links_or_order as _links_or_order
from qdrant.edge_files import (
    MetaFile,
    PidLock,
    holder_pid,
    persisted_memory,
    persisted_sizes,
    warm,
    warm_paths,
)
from qdrant.edge_graph import EdgeGraphBuilds
from qdrant.edge_points import EdgePoints
from qdrant.edge_search import EdgeSearches
from qdrant.edge_state import gated, page, pages
from qdrant.errors import IndexInUseError, StoreError
from qdrant.filters import SearchFilter, to_edge
from qdrant.schema import (
    DUP_VECTOR,
    EDGE_IMAGE_INDEXES,
    FACES,
    IMAGE_INDEXING,
    IMAGES,
    INDEX_FROM_POINTS,
    ON_DISK_INDEXES,
    VECTOR_NAMES,
    WORD_VECTOR,
    WORDS,
    IndexKind,
    VectorIndexing,
    abs_posix,
    with_numbers,
)
from qdrant.store import (
    SCROLL_BATCH,
    UPSERT_BATCH,
    Record,
    WithVectors,
)

log = logging.getLogger(__name__)

# Nothing reaches the disk with fsync until flush(); writes flush at most this often,
# so an OS crash loses at most this much (a killed process loses nothing: the WAL replays).
FLUSH_INTERVAL_S = 10.0
_WAL_LOCKED = "Kind(WouldBlock)"
_EXISTS_DIFFERENTLY = "already exists with different parameters"


class EdgeStore(EdgeSearches, EdgeGraphBuilds, EdgePoints):
    """The embedded store: Qdrant Edge shards under `root`, searched exactly.

    Opening takes an exclusive lock on `root`: a second open, from this process or
    another, raises IndexInUseError naming the holder's PID.
    """

    # words are small: four times an image batch a write
    _word_batch = UPSERT_BATCH * 4

    # the shared methods, each under the gate (gated); scroll_images and scroll_words take
    # it a page at a time (_scroll)
    ensure_collections = gated(BaseStore.ensure_collections)
    vector_sizes = gated(BaseStore.vector_sizes)
    word_vector_sizes = gated(BaseStore.word_vector_sizes)
    ensure_word_vector = gated(BaseStore.ensure_word_vector)
    upsert_images = gated(BaseStore.upsert_images)
    upsert_words = gated(BaseStore.upsert_words)
    update_vectors = gated(BaseStore.update_vectors)
    update_word_vectors = gated(BaseStore.update_word_vectors)
    search_images = gated(BaseStore.search_images)
    search_words = gated(BaseStore.search_words)
    search_images_batch = gated(BaseStore.search_images_batch)
    count = gated(BaseStore.count)
    count_vectors = gated(BaseStore.count_vectors)
    retrieve_images = gated(BaseStore.retrieve_images)
    find_by_sha256 = gated(BaseStore.find_by_sha256)
    find_by_path = gated(BaseStore.find_by_path)
    find_words = gated(BaseStore.find_words)

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
        self._meta = MetaFile(self.root)
        # the background read of the graphs (_start_warming)
        self._warm_thread: threading.Thread | None = None
        self._warm_stop = threading.Event()
        self._warmed = threading.Event()
        # held by every call that uses a shard, and by a graph swap (gated)
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
        self._lock = PidLock(self.root)
        self._lock.acquire(self.root)
        try:
            if graphbuild.recover(self.root, IMAGES):
                log.warning("%s: a graph swap was cut off; the index is as before it", self.root)
            for name in (IMAGES, WORDS, FACES):
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
        sizes = persisted_sizes(self.root / name) if name == IMAGES else {}
        config = (
            images_config(IMAGE_INDEXING, sizes, persisted_memory(self.root / name))
            if sizes
            else None
        )
        try:
            return qe.EdgeShard.load(str(path), config)
        except Exception as e:
            if _WAL_LOCKED in str(e):
                raise IndexInUseError(
                    f"index {self.root} is in use by PID {holder_pid(self.root)}"
                ) from e
            raise StoreError(f"cannot open {path}: {e}") from e

    @gated
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

    @gated
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

    def _start_warming(self) -> None:
        """Reads the images shard's int8 copies and graphs into the OS's cache in the
        background, when they are mapped without being read at open (Cold): the store
        opens at once and the first searches get faster as the pages arrive. Searches on
        the vectors the app queries first; `dup` (the duplicate scan) last."""
        if persisted_memory(self.root / IMAGES) != "cold":
            return
        order = sorted(self._sizes(IMAGES), key=lambda v: (v == DUP_VECTOR, v))
        paths = warm_paths(self.root / IMAGES, order)
        if not paths:
            return
        self._warm_thread = threading.Thread(
            target=warm, args=(paths, self._warm_stop, self._warmed), name="devise-warm",
            daemon=True,
        )  # fmt: skip
        self._warm_thread.start()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Waits until the background read of the graphs (see _start_warming) is done; True
        when it is (or none was needed)."""
        if self._warm_thread is None:
            return True
        return self._warmed.wait(timeout)

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

    @gated
    def close(self) -> None:
        """Flush what was written, close the shards and release the lock. Closing twice is
        harmless; a read-only session skips the flush (0.1 s of fsyncs for nothing)."""
        try:
            if self._shards and self._dirty:
                self.flush()
        finally:
            self._close_shards()
            self._lock.release()

    @gated
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
    # (a build's copy, journal and swap: EdgeGraphBuilds, qdrant/edge_graph.py)

    @gated
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

    # ---------------------------------------------------------------- schema

    def _sizes(self, name: str, refresh: bool = False) -> dict[str, int]:
        # the cache is dropped by every change to a shard's vectors: never stale
        del refresh
        if name not in self._shards:
            return {}
        cached = self._sizes_cache.get(name)
        if cached is not None:
            return cached
        sizes = persisted_sizes(self.root / name)
        self._sizes_cache[name] = sizes
        return sizes

    def _indexing(self) -> VectorIndexing:
        # read here, at the call: tests patch qdrant.edge.IMAGE_INDEXING
        return IMAGE_INDEXING

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
            config = images_config(IMAGE_INDEXING, vectors)
        elif name == FACES:
            config = faces_config(vectors)
        else:
            config = words_config(vectors)
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
            # with images_config gives it its own
            shard.close()
            self._shards[name] = self._load(name)

    @gated
    def drop_vector(self, name: str) -> None:
        shard = self._require(IMAGES)
        if name in self.vector_sizes():
            self._write(shard, qe.UpdateOperation.delete_vector_name(name))
            self._sizes_cache.pop(IMAGES, None)
            if VECTOR_NAMES in shard.info().payload_schema:
                named = qe.FieldCondition(VECTOR_NAMES, match=qe.MatchValue(name))
                for raw in pages(shard, qe.Filter(must=[named]), SCROLL_BATCH, False):
                    groups: dict[Any, list[qe.PointId]] = {}
                    for r in raw:
                        had = (r.payload or {}).get(VECTOR_NAMES) or []
                        groups.setdefault(tuple(v for v in had if v != name), []).append(r.id)
                    self._set_by_value(shard, VECTOR_NAMES, groups)
            shard.flush()

    @gated
    def drop_words(self) -> None:
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

    @gated
    def delete_images(self, ids: Sequence[str]) -> None:
        shard = self._shard(IMAGES)
        if shard is None or not ids:
            return
        self._write(shard, qe.UpdateOperation.delete_points(list(ids)), ids)
        # a photo takes its faces with it
        self.delete_faces([f.id for f in self.faces_of_photos(list(ids))])
        self._maybe_flush()

    @gated
    def set_image_payload(self, point_id: str, payload: dict[str, Any]) -> None:
        op = qe.UpdateOperation.set_payload([point_id], with_numbers(payload))
        self._write(self._require(IMAGES), op, [point_id])
        self._maybe_flush()

    @gated
    def set_image_payloads(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Merge each payload into its image point's payload, one point at a time."""
        shard = self._require(IMAGES)
        for point_id, payload in updates:
            op = qe.UpdateOperation.set_payload([point_id], with_numbers(payload))
            self._write(shard, op, [point_id])
        self._maybe_flush()

    # ---------------------------------------------------------------- reads

    def _has_vector(self, collection: str, name: str) -> bool:
        if self._shard(collection) is None:
            return False
        if name not in self._sizes(collection):
            raise StoreError(f"{self.root}: collection {collection!r} has no vector {name!r}")
        return True

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
                raw, offset = page(shard, edge_filter, offset, batch, with_vector(with_vectors))
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
        return [rec for raw in pages(shard, flt, SCROLL_BATCH, False) for rec in self._records(raw)]

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
        return self._meta.read()

    def set_meta(self, meta: dict[str, Any]) -> None:
        self._meta.write(meta)
