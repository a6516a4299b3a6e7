"""What the parts of the Edge store share (qdrant/edge.py, edge_search.py, edge_graph.py):
the state they read and write, the gate, and the scroll of one shard."""

from __future__ import annotations

import functools
import inspect
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import qdrant_edge as qe

from qdrant.base import BaseStore
from qdrant.errors import StoreError
from qdrant.schema import (
    VectorIndexing,
)


def page(
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


def pages(
    shard: qe.EdgeShard,
    flt: qe.Filter | None,
    batch: int,
    with_vector: bool | list[str],
    with_payload: bool = True,
) -> Iterator[list[qe.Record]]:
    """Every point of `shard` matching `flt`, with its payload, a page at a time."""
    offset: qe.PointId | None = None
    while True:
        raw, offset = page(shard, flt, offset, batch, with_vector, with_payload)
        yield raw
        if offset is None:
            return


_F = TypeVar("_F", bound=Callable[..., Any])


def gated(method: _F) -> _F:
    """Runs an EdgeStore method holding the store's gate, which a graph swap takes while it
    closes one images shard and loads the next (EdgeStore.finish_graph_build): no call
    meets a closed shard. Edge holds the GIL in every call, so the gate costs no
    parallelism."""

    @functools.wraps(method)
    def held(self: EdgeState, *args: Any, **kwargs: Any) -> Any:
        with self._gate:
            return method(self, *args, **kwargs)

    # a BaseStore method has the Store protocol's docstring, which wraps() does not find
    held.__doc__ = inspect.getdoc(method)
    return cast(_F, held)


class EdgeState(BaseStore):
    """The Edge store's state, set by EdgeStore.__init__, and what its parts call of it."""

    root: Path
    # held by every call that uses a shard, and by a graph swap (gated)
    _gate: threading.RLock
    _shards: dict[str, qe.EdgeShard]
    _sizes_cache: dict[str, dict[str, int]]
    _numbered_cache: dict[str, bool]
    _links_cache: dict[str, bool]
    _journal: set[qe.PointId] | None
    _journal_broken: bool
    _pending_seen: int | None

    def _shard(self, name: str) -> qe.EdgeShard | None:
        return self._shards.get(name)

    def _require(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is None:
            raise StoreError(f"collection {name!r} does not exist yet in {self.root}")
        return shard

    @abstractmethod
    def _indexing(self) -> VectorIndexing:
        """The image vectors' indexing settings, read at the call."""

    @abstractmethod
    def _load(self, name: str) -> qe.EdgeShard: ...

    @abstractmethod
    def _set_by_value(
        self, shard: qe.EdgeShard, field: str, groups: dict[Any, list[qe.PointId]]
    ) -> None: ...

    @abstractmethod
    def _start_warming(self) -> None: ...

    @abstractmethod
    def _stop_warming(self) -> None: ...
