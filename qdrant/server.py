"""Qdrant server backend over qdrant-client; tests run it on qdrant-client's local mode."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant.base import BaseStore, Points, VectorRows, with_vector
from qdrant.errors import StoreError, StoreUnavailableError
from qdrant.filters import SearchFilter, score_threshold, to_server
from qdrant.graphbuild import GraphBuild
from qdrant.schema import (
    FACES,
    IMAGE_INDEXES,
    IMAGES,
    INDEX_FROM_POINTS,
    META,
    WORD_VECTOR,
    WORDS,
    IndexKind,
    indexing_threshold_kb,
    with_numbers,
)
from qdrant.server_config import image_vector_diff, image_vector_params, search_params

# Under this name here too: tests read qdrant.server._schema; the code below calls it so.
from qdrant.server_config import index_schema as _schema
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

_META_ID = 0


class ServerStore(BaseStore):
    """The store on a Qdrant server (or a cluster) through an injected QdrantClient."""

    def __init__(self, client: QdrantClient, url_for_messages: str) -> None:
        self.client = client
        self.url = url_for_messages
        self._sizes_cache: dict[str, dict[str, int]] = {}
        options = client.init_options
        # qdrant-client's local mode (tests) searches by brute force and ignores payload
        # indexes, warning on every call that asks for either
        self._local = options.get("location") == ":memory:" or bool(options.get("path"))
        # A real server serialises concurrent requests itself; local mode's in-process
        # collections do not (a search racing an upsert sees arrays of different lengths),
        # so there every call takes one lock.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self._local else contextlib.nullcontext()
        )

    # ---------------------------------------------------------------- lifecycle

    def describe(self) -> str:
        """The server URL."""
        return self.url

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn transport failures into StoreUnavailableError naming the URL."""
        try:
            with self._lock:
                yield
        except (ResponseHandlingException, httpx.TransportError, ConnectionError) as e:
            raise StoreUnavailableError(
                f"Qdrant at {self.url} is unreachable ({what}): {_reason(e)}"
            ) from e
        except UnexpectedResponse as e:
            if e.status_code in (401, 403):
                raise StoreUnavailableError(
                    f"Qdrant at {self.url} refused the request ({what}): check QDRANT_API_KEY"
                ) from e
            raise StoreError(f"Qdrant at {self.url} failed ({what}): {e}") from e

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the server answers."""
        with self._guard("connect"):
            self.client.get_collections()

    def flush(self) -> None:
        """Nothing to do: every write waits for the server to apply it."""

    def optimize(self) -> None:
        """Nothing to do: the server runs its own optimizers."""

    def graphs_outdated(self) -> bool:
        """Never: a server rebuilds its own graphs when a collection's settings change."""
        return False

    def graph_build_due(self, left: int = 0) -> bool:
        """Never: the server builds its graphs in its own background threads."""
        del left
        return False

    def begin_graph_build(self) -> GraphBuild:
        raise StoreError(f"{self.url} builds its own graphs: there is nothing to build here")

    def finish_graph_build(self, build: GraphBuild) -> bool:
        del build
        return False

    def abandon_graph_build(self, build: GraphBuild) -> None:
        del build

    def fill_numbers(self) -> int:
        """Nothing to do: a server's folder and camera filters read names (its segments are
        searched in parallel on the server's cores; Edge, one thread, checks numbers
        instead)."""
        return 0

    def graph_pending(self) -> int:
        """Image vectors the server has not indexed yet, by its own count (0 in local mode,
        which builds nothing, and below the threshold)."""
        if self._local or not self._exists(IMAGES):
            return 0
        with self._guard(f"describe {IMAGES}"):
            info = self.client.get_collection(IMAGES)
        points = int(info.points_count or 0)
        if points < INDEX_FROM_POINTS:
            return 0
        vectors = len(self._sizes(IMAGES, refresh=True))
        return max(0, points * vectors - int(info.indexed_vectors_count or 0))

    def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(Exception):
            self.client.close()

    # ---------------------------------------------------------------- schema

    def _exists(self, collection: str) -> bool:
        with self._guard(f"check {collection}"):
            return bool(self.client.collection_exists(collection))

    def _sizes(self, collection: str, refresh: bool = False) -> dict[str, int]:
        if refresh or collection not in self._sizes_cache:
            if not self._exists(collection):
                return {}
            with self._guard(f"describe {collection}"):
                info = self.client.get_collection(collection)
            vectors = info.config.params.vectors
            sizes = (
                {str(k): int(v.size) for k, v in vectors.items()}
                if isinstance(vectors, dict)
                else {}
            )
            self._sizes_cache[collection] = sizes
        return self._sizes_cache[collection]

    def _image_indexes(self) -> dict[str, IndexKind]:
        return IMAGE_INDEXES

    def _create(
        self,
        collection: str,
        vectors: dict[str, int],
        indexes: dict[str, IndexKind],
        shard_number: int | None,
        replication_factor: int | None,
    ) -> None:
        # shard_number and replication_factor: None leaves the server's defaults (1 and 1)
        with self._guard(f"create {collection}"):
            images = collection == IMAGES
            self.client.create_collection(
                collection,
                vectors_config={
                    k: image_vector_params(d, k)
                    if images
                    else m.VectorParams(
                        size=d,
                        # faces: dlib's descriptors compare by Euclidean distance
                        distance=m.Distance.EUCLID if collection == FACES else m.Distance.COSINE,
                    )
                    for k, d in vectors.items()
                },
                # images: no graph below schema.INDEX_FROM_POINTS; words: never a graph
                optimizers_config=m.OptimizersConfigDiff(
                    indexing_threshold=indexing_threshold_kb(vectors) if images else 0
                ),
                shard_number=shard_number,
                replication_factor=replication_factor,
            )
            if not self._local:
                for field, kind in indexes.items():
                    self.client.create_payload_index(
                        collection, field, _schema(field, kind), wait=True
                    )
        self._sizes_cache.pop(collection, None)

    def _add_indexes(self, collection: str, indexes: dict[str, IndexKind]) -> None:
        """Create the payload indexes a collection made by an older version lacks (the EXIF
        fields' came later). Local mode has no payload indexes to create."""
        if self._local:
            return
        with self._guard(f"describe {collection}"):
            have = set(self.client.get_collection(collection).payload_schema or {})
        for field, kind in indexes.items():
            if field not in have:
                with self._guard(f"index {field} of {collection}"):
                    self.client.create_payload_index(
                        collection, field, _schema(field, kind), wait=True
                    )

    def _add_vectors(self, collection: str, vectors: dict[str, int]) -> None:
        sizes = self._sizes(collection, refresh=True)
        for name, dim in vectors.items():
            if name in sizes and sizes[name] != dim:
                raise StoreError(
                    f"{self.url}: vector {name!r} of {collection!r} has dimension "
                    f"{sizes[name]}, not {dim}; re-ingest after dropping it"
                )
            if name not in sizes:
                # servers from v1.18 add a named vector to a live collection in place;
                # existing points lack it until update_vectors() sets it
                try:
                    with self._guard(f"add vector {name} to {collection}"):
                        self.client.create_vector_name(
                            collection,
                            name,
                            m.DenseVectorNameConfig(
                                dense=m.DenseVectorConfig(size=dim, distance=m.Distance.COSINE)
                            ),
                            wait=True,
                        )
                except StoreError as e:
                    # an older server has no such endpoint: refuse rather than copy the
                    # collection behind the user's back; nothing stored is touched
                    if isinstance(e.__cause__, UnexpectedResponse) and e.__cause__.status_code in (
                        404,
                        405,
                    ):
                        raise StoreError(
                            f"Qdrant at {self.url} cannot add vector {name!r} to the existing "
                            f"{collection!r} collection: that needs Qdrant v1.18 or later "
                            "(compose.yaml pins one)"
                        ) from e
                    raise
        self._sizes_cache.pop(collection, None)
        if collection == IMAGES:
            self._apply_indexing(vectors)

    def _apply_indexing(self, vectors: dict[str, int]) -> None:
        """Give existing image vectors schema.IMAGE_INDEXING where they lack it (a collection
        made before, or a vector just added): the server rebuilds them in the background and
        answers exactly until then. Local mode keeps no such settings on an update."""
        with self._guard(f"describe {IMAGES}"):
            info = self.client.get_collection(IMAGES)
        current = info.config.params.vectors
        if not isinstance(current, dict):
            return
        want = {
            name: image_vector_diff(dim, name)
            for name, dim in vectors.items()
            if name in current and current[name].quantization_config is None
        }
        if not want:
            return
        with self._guard(f"index the vectors of {IMAGES}"):
            self.client.update_collection(
                IMAGES,
                vectors_config=want,
                optimizers_config=m.OptimizersConfigDiff(
                    indexing_threshold=indexing_threshold_kb(
                        {k: int(v.size) for k, v in current.items()}
                    )
                ),
            )

    def drop_vector(self, name: str) -> None:
        if name in self.vector_sizes():
            with self._guard(f"drop vector {name}"):
                self.client.delete_vector_name(IMAGES, name, wait=True)
            self._sizes_cache.pop(IMAGES, None)

    def drop_words(self) -> None:
        if self._exists(WORDS):
            with self._guard("drop words"):
                self.client.delete_collection(WORDS)
        self._sizes_cache.pop(WORDS, None)

    # ---------------------------------------------------------------- writes

    def _upsert(self, collection: str, batches: Iterable[Points]) -> None:
        for entries in batches:
            points = [
                m.PointStruct(id=pid, vector=vecs, payload=payload)
                for pid, vecs, payload in entries
            ]
            with self._guard(f"upsert into {collection}"):
                self.client.upsert(collection, points, wait=True)

    def _set_vectors(self, collection: str, name: str, batches: Iterable[VectorRows]) -> None:
        for ids, rows in batches:
            pvs = [
                m.PointVectors(id=i, vector={name: row}) for i, row in zip(ids, rows, strict=True)
            ]
            with self._guard(f"update vectors {name} of {collection}"):
                self.client.update_vectors(collection, pvs, wait=True)

    def delete_images(self, ids: Sequence[str]) -> None:
        if not ids or not self._exists(IMAGES):
            return
        with self._guard("delete images"):
            self.client.delete(IMAGES, m.PointIdsList(points=list(ids)), wait=True)
        # a photo takes its faces with it
        self.delete_faces([f.id for f in self.faces_of_photos(list(ids))])

    def set_image_payload(self, point_id: str, payload: dict[str, Any]) -> None:
        with self._guard("set payload"):
            self.client.set_payload(IMAGES, with_numbers(payload), points=[point_id], wait=True)

    def set_image_payloads(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Merge each payload into its image point's payload: one request per batch, not
        one round trip per point."""
        for start in range(0, len(updates), UPSERT_BATCH):
            ops: list[m.UpdateOperation] = [
                m.SetPayloadOperation(
                    set_payload=m.SetPayload(payload=with_numbers(payload), points=[point_id])
                )
                for point_id, payload in updates[start : start + UPSERT_BATCH]
            ]
            with self._guard("set payloads"):
                self.client.batch_update_points(IMAGES, ops, wait=True)

    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        with self._guard(f"delete from {collection}"):
            self.client.delete(collection, m.PointIdsList(points=list(ids)), wait=True)

    def _set_payloads(self, collection: str, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        ops: list[m.UpdateOperation] = [
            m.SetPayloadOperation(set_payload=m.SetPayload(payload=payload, points=[point_id]))
            for point_id, payload in updates
        ]
        with self._guard(f"set payloads in {collection}"):
            self.client.batch_update_points(collection, ops, wait=True)

    def _get(self, collection: str, ids: Sequence[str], with_vectors: WithVectors) -> list[Record]:
        with self._guard(f"retrieve from {collection}"):
            raw = self.client.retrieve(
                collection, list(ids), with_payload=True, with_vectors=with_vector(with_vectors)
            )
        return self._records(raw)

    # ---------------------------------------------------------------- reads

    def _query(
        self, collection: str, using: str, vector: Vector, k: int, flt: SearchFilter | None
    ) -> list[Hit]:
        with self._guard(f"search {collection}"):
            response = self.client.query_points(
                collection,
                query=as_vector(vector),
                using=using,
                query_filter=to_server(flt),
                score_threshold=score_threshold(flt),
                # local mode (tests) always searches by brute force and warns on params
                search_params=None if self._local else search_params(collection == WORDS, k, using),
                limit=k,
                with_payload=True,
                with_vectors=False,
            )
        return [
            Hit(point_id_str(p.id), float(p.score), dict(p.payload or {})) for p in response.points
        ]

    def _has_vector(self, collection: str, name: str) -> bool:
        sizes = self._sizes(collection)
        if name not in sizes:
            sizes = self._sizes(collection, refresh=True)
        if not sizes:
            return False
        if name not in sizes:
            raise StoreError(f"{self.url}: collection {collection!r} has no vector {name!r}")
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
        query_filter = to_server(flt)
        threshold = score_threshold(flt)
        # local mode (tests) always searches by brute force and warns on search params
        params = None if self._local else search_params(exact, k, name)
        requests = [
            m.QueryRequest(
                query=row.tolist(),
                using=name,
                filter=query_filter,
                score_threshold=threshold,
                params=params,
                limit=k,
                with_payload=with_payload,
                with_vector=False,
            )
            for row in mat
        ]
        with self._guard(f"batch search {IMAGES}"):
            responses = self.client.query_batch_points(IMAGES, requests=requests)
        return [
            [Hit(point_id_str(p.id), float(p.score), dict(p.payload or {})) for p in r.points]
            for r in responses
        ]

    def _count(self, collection: str, flt: SearchFilter | None) -> int:
        with self._guard(f"count {collection}"):
            return int(self.client.count(collection, count_filter=to_server(flt), exact=True).count)

    def _count_vectors(self, name: str) -> int:
        flt = m.Filter(must=[m.HasVectorCondition(has_vector=name)])
        with self._guard("count vectors"):
            return int(self.client.count(IMAGES, count_filter=flt, exact=True).count)

    def facet_values(self, field: str, exact: bool = True) -> dict[str, int]:
        if not self._exists(IMAGES):
            return {}
        with self._guard(f"facet {field}"):
            response = self.client.facet(IMAGES, field, limit=1_000_000, exact=exact)
        return {str(h.value): int(h.count) for h in response.hits if h.count > 0}

    def _scroll(
        self, collection: str, with_vectors: WithVectors, flt: SearchFilter | None, batch: int
    ) -> Iterator[Record]:
        return self._pages(collection, to_server(flt), with_vectors, batch)

    def _pages(
        self, collection: str, flt: m.Filter | None, with_vectors: WithVectors, batch: int
    ) -> Iterator[Record]:
        if not self._exists(collection):
            return
        offset: m.ExtendedPointId | None = None
        while True:
            with self._guard(f"scroll {collection}"):
                raw, offset = self.client.scroll(
                    collection,
                    scroll_filter=flt,
                    limit=batch,
                    offset=offset,
                    with_payload=True,
                    with_vectors=with_vector(with_vectors),
                )
            yield from self._records(raw)
            if offset is None:
                return

    def _retrieve(
        self, ids: Sequence[str], with_vectors: WithVectors, with_payload: bool
    ) -> list[Record]:
        if not self._exists(IMAGES):
            return []
        with self._guard("retrieve images"):
            raw = self.client.retrieve(
                IMAGES, list(ids), with_payload=with_payload,
                with_vectors=with_vector(with_vectors),
            )  # fmt: skip
        return self._records(raw)

    def _matching(self, field: str, values: list[str]) -> list[Record]:
        flt = m.Filter(must=[m.FieldCondition(key=field, match=m.MatchAny(any=values))])
        return list(self._pages(IMAGES, flt, False, SCROLL_BATCH))

    def _word_records(self, words: Sequence[str]) -> list[Record]:
        if not self._exists(WORDS):
            return []
        flt = m.Filter(must=[m.FieldCondition(key="word", match=m.MatchAny(any=list(words)))])
        with self._guard("look up words"):
            raw, _ = self.client.scroll(
                WORDS,
                scroll_filter=flt,
                limit=3 * len(words) + 1,
                with_payload=True,
                with_vectors=[WORD_VECTOR],
            )
        return self._records(raw)

    # ---------------------------------------------------------------- meta

    def get_meta(self) -> dict[str, Any]:
        """The meta document, kept as the payload of one point in `devise_meta`."""
        if not self._exists(META):
            return {}
        with self._guard("read meta"):
            found = self.client.retrieve(META, [_META_ID], with_payload=True)
        if not found or not found[0].payload:
            return {}
        meta = found[0].payload.get("meta")
        return dict(meta) if isinstance(meta, dict) else {}

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace the meta document (one upsert of one point, so it is atomic)."""
        if not self._exists(META):
            with self._guard("create meta"):
                # a collection of payload-only points: it needs no vectors at all
                self.client.create_collection(META, vectors_config={})
        with self._guard("write meta"):
            self.client.upsert(
                META,
                [m.PointStruct(id=_META_ID, vector={}, payload={"meta": meta})],
                wait=True,
            )


def _reason(e: BaseException) -> str:
    source = getattr(e, "source", None)
    return str(source or e) or type(e).__name__


def connect(url: str, api_key: str | None = None, timeout: float = 5.0) -> ServerStore:
    """Open a ServerStore on `url` and check that the server answers within `timeout` s.

    Raises StoreUnavailableError naming the URL when it does not.
    """
    try:
        # the version check would make a request of its own, with its own timeout and a
        # warning instead of an error; ping() below is the check
        client = QdrantClient(
            url=url, api_key=api_key, timeout=max(1, round(timeout)), check_compatibility=False
        )
    except Exception as e:  # a malformed URL fails here, before any request
        raise StoreUnavailableError(f"cannot use Qdrant URL {url}: {e}") from e
    store = ServerStore(client, url)
    try:
        store.ping()
    except StoreError:
        store.close()
        raise
    return store
