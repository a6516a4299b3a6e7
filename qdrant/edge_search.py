"""Searching and counting the Edge shards: graph walks and their exact fallback, ACORN or
each folder's and label's own links, counts and facets, and the folder and camera numbers
the filters use once every point has them."""

from __future__ import annotations

import json
import logging
from typing import Any

import qdrant_edge as qe

from qdrant.edge_config import search_params
from qdrant.edge_state import EdgeState, gated, pages
from qdrant.filters import SearchFilter, score_threshold, to_edge
from qdrant.schema import (
    CAMERA_ID,
    FOLDER_IDS,
    IMAGES,
    VECTOR_NAMES,
    camera_id,
    folder_id,
    folders_of,
)
from qdrant.store import SCROLL_BATCH, Hit, Matrix, Vector, as_vector, point_id_str

# EdgeStore's records keep the logger they always had
log = logging.getLogger("qdrant.edge")

#: per number field, the image points that lack it: written before it existed
LACKING: dict[str, qe.Filter] = {
    FOLDER_IDS: qe.Filter(must=[qe.IsEmptyCondition(FOLDER_IDS)]),
    CAMERA_ID: qe.Filter(
        must=[qe.IsEmptyCondition(CAMERA_ID)], must_not=[qe.IsEmptyCondition("camera")]
    ),
    VECTOR_NAMES: qe.Filter(must=[qe.IsEmptyCondition(VECTOR_NAMES)]),
}


def number_of(field: str, payload: dict[str, Any]) -> int | tuple[int, ...]:
    """What number field `field` of a point with `payload` holds: its folders' numbers (from
    `path` where a very old point lacks `folders`), or its camera's."""
    if field == FOLDER_IDS:
        folders = payload.get("folders")
        if not isinstance(folders, list):
            folders = folders_of(str(payload.get("path", "")))
        return tuple(folder_id(str(f)) for f in folders)
    return camera_id(str(payload.get("camera", "")))


def may_be_stranded(
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


class EdgeSearches(EdgeState):
    """The Edge store's searches, counts and filters."""

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
                params=search_params(self._indexing(), exact, k, using, acorn=acorn, linked=linked),
                with_payload=True,
                with_vector=False,
            )
            return [
                Hit(point_id_str(p.id), float(p.score), dict(p.payload or {}))
                for p in shard.query(request)
            ]

        # words and faces: always exact (no graph); images: the graph once it is built
        exact = collection != IMAGES
        hits = run(exact)
        if len(hits) < k and may_be_stranded(shard, exact, edge_filter, threshold):
            # A filtered walk of the graph can strand itself among points the filter refuses
            # and return short (seen once in a full test run: a 1-in-15 filter on a 4,000-
            # point graph). Fewer than k hits is then either every match or a stranded walk:
            # the exact search tells which, from the payload index when the filter is narrow.
            again = run(True)
            if len(again) > len(hits):
                log.info("filtered graph search found %d of %d: searched exactly", len(hits), k)
                hits = again
        return hits

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
            params = search_params(self._indexing(), exact, k, name, acorn=acorn, linked=linked)
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
        if short and may_be_stranded(shard, exact, edge_filter, threshold):
            # as in _query: a filtered walk that came back short is either every match or
            # stranded among points the filter refuses; the exact search tells which
            for i, hits in zip(short, run(mat[short], True), strict=True):
                if len(hits) > len(out[i]):
                    out[i] = hits
        return out

    def _acorn(self, flt: SearchFilter | None, name: str) -> bool:
        """Whether a walk of `name`'s graph filtered by `flt` needs ACORN's second hop: not
        when the graph has links per folder and label (_has_links) and the filter holds a
        folder or a single label whose points have their own (schema.LINKED_INDEXES: a
        value with between `full_scan_points` and `linked_share` of the points); the walk
        then stays among the filter's points (at 1,000,000 points: 2.5 ms against 11.0 with
        ACORN, recall 0.998 both). Counted from the payload index, 0.01 ms a condition."""
        ix = self._indexing()
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

    def _has_links(self, name: str) -> bool:
        """Whether every graph of image vector `name` was built with links per folder and
        label: not `dup`'s, nor a graph built before them, until optimize() rebuilds it."""
        if name not in self._links_cache:
            built = self._built_payload_m(name)
            self._links_cache[name] = bool(built) and min(built) > 0
        return self._links_cache[name]

    def _built_payload_m(self, name: str) -> list[int]:
        """The `payload_m` each graph of image vector `name` was built with, from each
        segment's own HNSW config (Edge writes it beside the graph); none without a graph."""
        segments = self.root / IMAGES / "segments"
        configs = segments.glob(f"*/vector_index-{name}/hnsw_config.json")
        try:
            return [int(json.loads(p.read_text()).get("payload_m") or 0) for p in configs]
        except (OSError, ValueError):
            return []

    @gated
    def graphs_outdated(self) -> bool:
        """Whether a graph was built with other links per payload value than today's
        (schema.IMAGE_INDEXING.payload_m: an index made before them); the next optimize()
        rebuilds it."""
        if self._shard(IMAGES) is None:
            return False
        return any(
            m != self._indexing().payload_m_of(name)
            for name in self._sizes(IMAGES)
            for m in self._built_payload_m(name)
        )

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

    def _numbered(self, field: str) -> bool:
        """Whether every image point carries number field `field` (FOLDER_IDS, or CAMERA_ID
        where it has a camera); points written before the field existed lack it until
        fill_numbers() (`devise ingest`) gives it to them. Known once per write: a count of
        the points without it, from the field's null index (8-11 ms at 1,000,000 points)."""
        if field not in self._numbered_cache:
            shard = self._shard(IMAGES)
            if shard is None or field not in shard.info().payload_schema:
                return False
            missing = shard.count(qe.CountRequest(exact=True, filter=LACKING[field]))
            self._numbered_cache[field] = missing == 0
        return self._numbered_cache[field]

    @gated
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
            for raw in pages(shard, LACKING[field], SCROLL_BATCH, False):
                for r in raw:
                    groups.setdefault(number_of(field, r.payload or {}), []).append(r.id)
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
            for raw in pages(shard, flt, SCROLL_BATCH * 4, False, with_payload=False):
                for r in raw:
                    names.setdefault(r.id, []).append(vec)
        groups: dict[Any, list[qe.PointId]] = {}
        for pid, have in names.items():
            groups.setdefault(tuple(have), []).append(pid)
        self._set_by_value(shard, VECTOR_NAMES, groups)
        return list(names)

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

    @gated
    def facet_values(self, field: str, exact: bool = True) -> dict[str, int]:
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
