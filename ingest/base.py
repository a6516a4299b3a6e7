"""The names every ingest stage shares: what it takes (`ArrayEmbedder`, `FileEntry`), what
it gives (`IngestSummary`) and how it fails (`IngestError`). `ingest.pipeline` exports them
too."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from model.data.images import Preprocess

if TYPE_CHECKING:
    from ingest.faces import FaceSummary

Float32Array = npt.NDArray[np.float32]


class IngestError(RuntimeError):
    pass


class ArrayEmbedder(Protocol):
    """What ingest needs of an embedder: its identity, its input spec, and a batch call."""

    name: str

    @property
    def dim(self) -> int: ...

    @property
    def content_id(self) -> str: ...

    @property
    def preprocess(self) -> Preprocess: ...

    def embed_arrays(self, arrays: Float32Array) -> Float32Array: ...


@dataclass
class IngestSummary:
    indexed: int = 0
    unchanged: int = 0
    moved: int = 0
    pruned: int = 0
    twins: int = 0  # points of an older index stored under a symlink path, now settled
    exif_added: int = 0  # unchanged files whose points were given their EXIF fields
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    wait_seconds: float = 0.0  # time the embedders waited for the loader threads
    batches: int = 0
    to_embed: int = 0  # files found new or changed, to embed: what a progress bar counts to
    #: what the face stage after the embedding did (ingest/faces.py), when it ran
    faces: FaceSummary | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "pruned": self.pruned,
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 3),
        }
        if self.faces is not None:
            out["faces"] = self.faces.to_json()
        return out

    def line(self) -> str:
        failed = sum(self.failed.values())
        why = ", ".join(f"{r}: {n}" for r, n in sorted(self.failed.items()))
        return (
            f"indexed {self.indexed}, unchanged {self.unchanged}, moved {self.moved}, "
            f"pruned {self.pruned}, failed {failed}"
            + (f" ({why})" if why else "")
            + (f", {self.twins} symlinked twin(s) settled" if self.twins else "")
            + (f", EXIF added to {self.exif_added} unchanged" if self.exif_added else "")
            + f" in {self.seconds:.1f}s"
            # the face stage's line when it had photos to read (the JSON always has it)
            + (f"; {self.faces.line()}" if self.faces is not None and self.faces.photos else "")
        )


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute posix path, symlinks resolved: one file, one point
    size: int
    mtime: float
    label: str
