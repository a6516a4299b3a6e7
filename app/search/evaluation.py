"""An evaluation table kept in the index (`devise eval --record`), where the web app's Compare
tab shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qdrant.store import Store


@dataclass
class Recorded:
    """An evaluation table kept in the index's meta (`devise eval --record`), reported as
    the app's job reports an ingest."""

    where: str
    failed: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return f"recorded in {self.where}"

    def to_json(self) -> dict[str, Any]:
        return {"recorded": self.where}


def record_in(store: Store, data: dict[str, Any]) -> Recorded:
    """Keeps `data` (an evaluation report's JSON, with the folder it measured as `data`) in
    the index's meta, where the web app's Compare tab shows it."""
    meta = store.get_meta()
    meta["evaluation"] = data
    store.set_meta(meta)
    return Recorded(store.describe())
