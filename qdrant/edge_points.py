"""The Edge store's writes and reads by point id in any collection, and the faces
collection's methods under the store's gate (qdrant/base.py holds them for both backends)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import qdrant_edge as qe

from qdrant.base import BaseStore, with_vector
from qdrant.edge_state import EdgeState, gated
from qdrant.store import Record, WithVectors


class EdgePoints(EdgeState):
    """Deletes, payload updates and lookups by id (BaseStore's `_delete`, `_set_payloads`
    and `_get`), and the faces methods, each under the gate."""

    ensure_faces = gated(BaseStore.ensure_faces)
    upsert_faces = gated(BaseStore.upsert_faces)
    delete_faces = gated(BaseStore.delete_faces)
    set_face_payloads = gated(BaseStore.set_face_payloads)
    search_faces = gated(BaseStore.search_faces)
    retrieve_faces = gated(BaseStore.retrieve_faces)

    @abstractmethod
    def _write(
        self, shard: qe.EdgeShard, op: qe.UpdateOperation, ids: Sequence[qe.PointId] | None = None
    ) -> None: ...

    @abstractmethod
    def _maybe_flush(self) -> None: ...

    def _delete(self, collection: str, ids: Sequence[str]) -> None:
        self._write(self._require(collection), qe.UpdateOperation.delete_points(list(ids)), ids)
        self._maybe_flush()

    def _set_payloads(self, collection: str, updates: Sequence[tuple[str, dict[str, Any]]]) -> None:
        shard = self._require(collection)
        for point_id, payload in updates:
            self._write(shard, qe.UpdateOperation.set_payload([point_id], payload), [point_id])
        self._maybe_flush()

    def _get(self, collection: str, ids: Sequence[str], with_vectors: WithVectors) -> list[Record]:
        shard = self._require(collection)
        raw = shard.retrieve(list(ids), with_payload=True, with_vector=with_vector(with_vectors))
        return self._records(raw)
