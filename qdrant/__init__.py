"""Vector storage for devise-search: schema, filters, the Store protocol and its backends."""

from __future__ import annotations

from pathlib import Path

from qdrant.errors import IndexInUseError, StoreError, StoreUnavailableError
from qdrant.filters import GeoCircle, SearchFilter
from qdrant.store import Hit, Record, Store

__all__ = [
    "GeoCircle",
    "Hit",
    "IndexInUseError",
    "Record",
    "SearchFilter",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
]


def open_store(
    index: Path | None, url: str | None, api_key: str | None = None, timeout: float = 5.0
) -> Store:
    """Open the store: a Qdrant server when `url` is given (it wins), else Edge at `index`.

    Raises IndexInUseError, StoreUnavailableError or ValueError (neither given).
    """
    # imported here so that using one backend never loads the other's client
    if url:
        from qdrant.server import connect

        return connect(url, api_key, timeout=timeout)
    if index is None:
        raise ValueError("open_store needs an index directory or a Qdrant URL")
    from qdrant.edge import EdgeStore

    return EdgeStore(Path(index))
