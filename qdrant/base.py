"""What both backends share: the Store methods written once, over the few primitives each
backend gives in its own client's terms (qdrant/edge.py, qdrant/server.py)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import numpy as np

from qdrant.filters import SearchFilter
from qdrant.schema import (
    FACE_INDEXES,
    FACE_VECTOR,
    FACES,
    IMAGES,
    WORD_INDEXES,
    WORD_VECTOR,
    WORDS,
    ImagePayload,
    IndexKind,
    abs_posix,
    with_numbers,
)
from qdrant.store import (
    SCROLL_BATCH,
    UPSERT_BATCH,
    Hit,
    Matrix,
    Record,
    Store,
    Vector,
    WithVectors,
    as_matrix,
    point_id_str,
    word_points,
)

PointId = int | str
#: a face descriptor's length (dlib's ResNet; model/detectors/dlib_faces.py: qdrant knows
#: nothing of model/, so the number is written here too)
DESCRIPTOR_DIM = 128
#: one batch of points to write: (point id, named vectors as lists of floats, payload)
Points = Sequence[tuple[PointId, dict[str, Any], dict[str, Any]]]
#: one batch of one named vector to set: the points' ids and a row for each
VectorRows = tuple[Sequence[PointId], list[list[float]]]


def vectors_of(raw: object) -> dict[str, Vector]:
    """A point's named vectors as the client returns them (a dict, or nothing asked for)."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): np.asarray(v, dtype=np.float32) for k, v in raw.items()}


def with_vector(with_vectors: WithVectors) -> bool | list[str]:
    """`with_vectors` as both clients take it: a bool or a list of names."""
    return with_vectors if isinstance(with_vectors, bool) else list(with_vectors)


class BaseStore(Store):
    """The Store methods that read the same on both backends; their docstrings are the Store
    protocol's (qdrant/store.py). A backend gives the primitives below."""

    # how many word points go to the backend in one write
    _word_batch = UPSERT_BATCH

    # ---------------------------------------------------------------- primitives

    @abstractmethod
    def _exists(self, collection: str) -> bool: ...

    @abstractmethod
    def _sizes(self, collection: str, refresh: bool = False) -> dict[str, int]: ...

    @abstractmethod
    def _image_indexes(self) -> dict[str, IndexKind]:
        """The payload indexes of `images` on this backend."""

    @abstractmethod
    def _create(
        self,
        collection: str,
        vectors: dict[str, int],
        indexes: dict[str, IndexKind],
        shard_number: int | None,
        replication_factor: int | None,
    ) -> None: ...

    @abstractmethod
    def _add_vectors(self, collection: str, vectors: dict[str, int]) -> None: ...

    @abstractmethod
    def _add_indexes(self, collection: str, indexes: dict[str, IndexKind]) -> None: ...

    @abstractmethod
    def _upsert(self, collection: str, batches: Iterable[Points]) -> None: ...

    @abstractmethod
    def _set_vectors(self, collection: str, name: str, batches: Iterable[VectorRows]) -> None: ...

    @abstractmethod
    def _has_vector(self, collection: str, name: str) -> bool:
        """Whether `collection` can be searched by `name`: False when it is missing or has no
        vectors at all; StoreError when it has others but not `name`."""

    @abstractmethod
    def _query(
        self, collection: str, using: str, vector: Vector, k: int, flt: SearchFilter | None
    ) -> list[Hit]: ...

    @abstractmethod
    def _search_batch(
        self,
        name: str,
        mat: Matrix,
        k: int,
        flt: SearchFilter | None,
        exact: bool,
        with_payload: bool,
    ) -> list[list[Hit]]: ...

    @abstractmethod
    def _count(self, collection: str, flt: SearchFilter | None) -> int: ...

    @abstractmethod
    def _count_vectors(self, name: str) -> int: ...

    @abstractmethod
    def _scroll(
        self, collection: str, with_vectors: WithVectors, flt: SearchFilter | None, batch: int
    ) -> Iterator[Record]: ...

    @abstractmethod
    def _retrieve(
        self, ids: Sequence[str], with_vectors: WithVectors, with_payload: bool
    ) -> list[Record]: ...

    @abstractmethod
    def _matching(self, field: str, values: list[str]) -> list[Record]:
        """The image points whose keyword `field` is one of `values`, payload only."""

    @abstractmethod
    def _word_records(self, words: Sequence[str]) -> list[Record]:
        """The word points of these words, with their WORD_VECTOR."""

    @abstractmethod
    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        """Delete points of `collection` (which exists); unknown ids are ignored."""

    @abstractmethod
    def _set_payloads(self, collection: str, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Merge each payload into its point of `collection` (which exists)."""

    @abstractmethod
    def _get(self, collection: str, ids: Sequence[str], with_vectors: WithVectors) -> list[Record]:
        """The points of `collection` (which exists) with these ids, with their payload."""

    # ---------------------------------------------------------------- shared

    def _records(self, raw: Sequence[Any]) -> list[Record]:
        return [
            Record(point_id_str(r.id), dict(r.payload or {}), vectors_of(r.vector)) for r in raw
        ]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ensure_collections(
        self,
        image_vectors: dict[str, int],
        word_dim: int | None = None,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
    ) -> None:
        if image_vectors:
            if self._exists(IMAGES):
                self._add_vectors(IMAGES, image_vectors)
                self._add_indexes(IMAGES, self._image_indexes())
            else:
                self._create(
                    IMAGES, image_vectors, self._image_indexes(), shard_number, replication_factor
                )
        if word_dim is not None:
            if self._exists(WORDS):
                self._add_vectors(WORDS, {WORD_VECTOR: word_dim})
                self._add_indexes(WORDS, WORD_INDEXES)
            else:
                self._create(
                    WORDS, {WORD_VECTOR: word_dim}, WORD_INDEXES, shard_number, replication_factor
                )

    def vector_sizes(self) -> dict[str, int]:
        return dict(self._sizes(IMAGES, refresh=True))

    def word_vector_sizes(self) -> dict[str, int]:
        return dict(self._sizes(WORDS, refresh=True))

    def ensure_word_vector(self, name: str, dim: int) -> None:
        self._add_vectors(WORDS, {name: dim})

    def upsert_images(
        self,
        ids: Sequence[str],
        payloads: Sequence[ImagePayload],
        vectors: dict[str, Matrix],
    ) -> None:
        n = len(ids)
        if len(payloads) != n:
            raise ValueError(f"upsert_images: {n} ids but {len(payloads)} payloads")
        mats = {k: as_matrix(v, n, f"vector {k!r}") for k, v in vectors.items()}
        # a batch's vectors become Python lists only when the backend takes that batch
        batches = (
            [
                (ids[i], {k: mat[i].tolist() for k, mat in mats.items()}, with_numbers(payloads[i]))
                for i in range(start, min(start + UPSERT_BATCH, n))
            ]
            for start in range(0, n, UPSERT_BATCH)
        )
        self._upsert(IMAGES, batches)

    def upsert_words(
        self,
        ranks: Sequence[int],
        words: Sequence[str],
        vectors: Matrix,
        source: str,
        kinds: Sequence[str] | None = None,
    ) -> None:
        batches = word_points(ranks, words, vectors, source, kinds, self._word_batch)
        self._upsert(
            WORDS,
            (
                [(pid, {WORD_VECTOR: vec}, payload) for pid, vec, payload in entries]
                for entries in batches
            ),
        )

    def update_vectors(self, ids: Sequence[str], name: str, vectors: Matrix) -> None:
        self._update_vectors(IMAGES, ids, name, vectors)

    def update_word_vectors(self, ids: Sequence[int | str], name: str, vectors: Matrix) -> None:
        self._update_vectors(WORDS, ids, name, vectors)

    def _update_vectors(
        self, collection: str, ids: Sequence[int | str], name: str, vectors: Matrix
    ) -> None:
        mat = as_matrix(vectors, len(ids), f"vector {name!r}")
        batches = (
            (
                ids[start : start + UPSERT_BATCH],
                [mat[i].tolist() for i in range(start, min(start + UPSERT_BATCH, len(ids)))],
            )
            for start in range(0, len(ids), UPSERT_BATCH)
        )
        self._set_vectors(collection, name, batches)

    def search_images(
        self, name: str, vector: Vector, k: int, flt: SearchFilter | None = None
    ) -> list[Hit]:
        if k <= 0 or not self._has_vector(IMAGES, name):
            return []
        return self._query(IMAGES, name, vector, k, flt)

    def search_words(
        self, vector: Vector, k: int, flt: SearchFilter | None = None, using: str = WORD_VECTOR
    ) -> list[Hit]:
        if k <= 0 or not self._has_vector(WORDS, using):
            return []
        return self._query(WORDS, using, vector, k, flt)

    def search_images_batch(
        self,
        name: str,
        vectors: Matrix,
        k: int,
        flt: SearchFilter | None = None,
        *,
        exact: bool = True,
        with_payload: bool = True,
    ) -> list[list[Hit]]:
        mat = as_matrix(vectors, len(vectors), f"vector {name!r}")
        if k <= 0 or not len(mat) or not self._has_vector(IMAGES, name):
            return [[] for _ in range(len(mat))]
        return self._search_batch(name, mat, k, flt, exact, with_payload)

    def count(self, collection: str, flt: SearchFilter | None = None) -> int:
        if not self._exists(collection):
            return 0
        return self._count(collection, flt)

    def count_vectors(self, name: str) -> int:
        if name not in self.vector_sizes():
            return 0
        return self._count_vectors(name)

    def facet_labels(self) -> dict[str, int]:
        return self.facet_values("label")

    def scroll_images(
        self,
        with_vectors: WithVectors = False,
        flt: SearchFilter | None = None,
        batch: int = SCROLL_BATCH,
    ) -> Iterator[Record]:
        return self._scroll(IMAGES, with_vectors, flt, batch)

    def scroll_words(self, flt: SearchFilter | None = None) -> Iterator[Record]:
        return self._scroll(WORDS, False, flt, SCROLL_BATCH * 4)

    def retrieve_images(
        self, ids: Sequence[str], with_vectors: WithVectors = False, with_payload: bool = True
    ) -> list[Record]:
        if not ids:
            return []
        return self._retrieve(ids, with_vectors, with_payload)

    def _find(self, field: str, values: Sequence[str]) -> list[Record]:
        out: list[Record] = []
        for start in range(0, len(values), SCROLL_BATCH):
            out.extend(self._matching(field, list(values[start : start + SCROLL_BATCH])))
        return out

    def find_by_sha256(self, hashes: Sequence[str]) -> dict[str, list[Record]]:
        found: dict[str, list[Record]] = {}
        for rec in self._find("sha256", hashes):
            found.setdefault(str(rec.payload.get("sha256")), []).append(rec)
        return found

    def find_by_path(self, paths: Sequence[str]) -> dict[str, Record]:
        records = self._find("path", [abs_posix(p) for p in paths])
        return {str(r.payload.get("path")): r for r in records}

    def find_words(self, words: Sequence[str]) -> dict[str, Vector]:
        if not words:
            return {}
        out: dict[str, Vector] = {}
        for rec in self._word_records(words):
            vec = rec.vectors.get(WORD_VECTOR)
            if vec is not None:
                out[str(rec.payload.get("word"))] = vec
        return out

    # ---------------------------------------------------------------- faces

    def ensure_faces(self) -> None:
        if self._exists(FACES):
            self._add_indexes(FACES, FACE_INDEXES)
        else:
            self._create(FACES, {FACE_VECTOR: DESCRIPTOR_DIM}, FACE_INDEXES, None, None)

    def upsert_faces(
        self, ids: Sequence[str], payloads: Sequence[dict[str, Any]], vectors: Matrix
    ) -> None:
        n = len(ids)
        if len(payloads) != n:
            raise ValueError(f"upsert_faces: {n} ids but {len(payloads)} payloads")
        if not n:
            return
        mat = as_matrix(vectors, n, "face descriptors")
        self.ensure_faces()
        batches = (
            [
                (ids[i], {FACE_VECTOR: mat[i].tolist()}, dict(payloads[i]))
                for i in range(start, min(start + UPSERT_BATCH, n))
            ]
            for start in range(0, n, UPSERT_BATCH)
        )
        self._upsert(FACES, batches)

    def delete_faces(self, ids: Sequence[str]) -> None:
        if ids and self._exists(FACES):
            for start in range(0, len(ids), UPSERT_BATCH):
                self._delete(FACES, list(ids[start : start + UPSERT_BATCH]))

    def set_face_payloads(self, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if updates and self._exists(FACES):
            for start in range(0, len(updates), UPSERT_BATCH):
                self._set_payloads(FACES, updates[start : start + UPSERT_BATCH])

    def search_faces(self, vector: Vector, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        if k <= 0 or not self._exists(FACES) or not self._has_vector(FACES, FACE_VECTOR):
            return []
        return self._query(FACES, FACE_VECTOR, vector, k, flt)

    def scroll_faces(
        self, flt: SearchFilter | None = None, with_vectors: WithVectors = False
    ) -> Iterator[Record]:
        if not self._exists(FACES):
            return iter(())
        return self._scroll(FACES, with_vectors, flt, SCROLL_BATCH)

    def retrieve_faces(self, ids: Sequence[str], with_vectors: WithVectors = False) -> list[Record]:
        if not ids or not self._exists(FACES):
            return []
        return self._get(FACES, ids, with_vectors)

    def faces_of_photos(self, photo_ids: Sequence[str]) -> list[Record]:
        out: list[Record] = []
        for start in range(0, len(photo_ids), SCROLL_BATCH):
            chunk = tuple(photo_ids[start : start + SCROLL_BATCH])
            out.extend(self.scroll_faces(SearchFilter(matches=(("photo", chunk),))))
        return out
