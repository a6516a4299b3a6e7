"""Background graph builds of the Edge images shard: the copy for the builder process
(qdrant/builder.py), the journal of what is written meanwhile, and the swap."""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge as qe

from qdrant import graphbuild
from qdrant.edge_files import persisted_sizes
from qdrant.edge_state import EdgeState
from qdrant.errors import StoreError
from qdrant.schema import IMAGES
from qdrant.store import UPSERT_BATCH, point_id_str


def replay(live: qe.EdgeShard, built: qe.EdgeShard, ids: Sequence[qe.PointId]) -> None:
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


class EdgeGraphBuilds(EdgeState):
    """The Edge store's background graph builds."""

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
            same = persisted_sizes(self.root / IMAGES) == build.sizes
        if journal is None or broken or not same:
            self.abandon_graph_build(build)
            return False
        built = qe.EdgeShard.load(str(build.path))
        try:
            replay(live, built, sorted(journal, key=str))
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
