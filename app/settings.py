"""One settings object, read from flags and environment at the edge, passed down as values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qdrant.store import Store

DEFAULT_INDEX = Path("data/index")


@dataclass(frozen=True)
class Settings:
    index: Path = DEFAULT_INDEX
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    checkpoint: Path | None = None
    shards: int | None = None
    replicas: int | None = None
    precision: str = "auto"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        index: str | None = None,
        qdrant_url: str | None = None,
        checkpoint: str | None = None,
        precision: str | None = None,
    ) -> Settings:
        """Flags win over `DEVISE_*` / `QDRANT_*` variables, which win over defaults."""
        env = os.environ if env is None else env

        def opt_int(name: str) -> int | None:
            v = env.get(name, "").strip()
            return int(v) if v.isdigit() else None

        ckpt = checkpoint or env.get("DEVISE_CHECKPOINT") or None
        return cls(
            index=Path(index or env.get("DEVISE_INDEX") or DEFAULT_INDEX),
            qdrant_url=qdrant_url or env.get("QDRANT_URL") or None,
            # an empty QDRANT_API_KEY means no key, not an empty one
            qdrant_api_key=env.get("QDRANT_API_KEY") or None,
            checkpoint=Path(ckpt) if ckpt else None,
            shards=opt_int("DEVISE_SHARDS"),
            replicas=opt_int("DEVISE_REPLICAS"),
            precision=precision or env.get("DEVISE_PRECISION") or "auto",
        )

    def open_store(self) -> Store:
        from qdrant import open_store

        return open_store(
            None if self.qdrant_url else self.index, self.qdrant_url, self.qdrant_api_key
        )
