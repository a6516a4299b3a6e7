"""Checkpoints: one safetensors file holding tensors and, in its header, JSON metadata.

Nothing here unpickles: a file that is not safetensors (a planted pickle, a torch .pt) is
refused with a clear error. Writes go to a temporary file that is renamed into place, so a
killed `devise train` never leaves a half-written checkpoint where a valid one was.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = "devise-search/1"
_META_KEY = "devise"


class CheckpointError(ValueError):
    pass


@dataclass
class Checkpoint:
    tensors: dict[str, Any]  # torch tensors, or numpy arrays with framework="numpy"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def content_id(self) -> str:
        return str(self.meta.get("content_hash", ""))

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """The tensors under `prefix.`, with the prefix removed (a sub-module's state dict)."""
        p = prefix + "."
        return {k[len(p) :]: v for k, v in self.tensors.items() if k.startswith(p)}


def content_hash(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    body = {k: v for k, v in meta.items() if k not in ("content_hash", "metrics")}
    h.update(json.dumps(body, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """Write atomically; returns the content hash, which is also stored in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = dict(meta, format=FORMAT)
    meta["content_hash"] = content_hash(tensors, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(meta["content_hash"])


def read_meta(path: Path) -> dict[str, Any]:
    """Only the metadata, from the safetensors header (an 8-byte little-endian length, then
    JSON), without torch: the demo and the app read it at start-up."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
        raw = (header.get("__metadata__") or {}).get(_META_KEY)
    except (OSError, ValueError, struct.error, AttributeError):
        raw = None
    if raw is None:  # let the full reader say what is wrong (missing, not safetensors, ...)
        return _open(path, with_tensors=False).meta
    return _check(path, raw)


def load_checkpoint(path: Path, framework: str = "pt") -> Checkpoint:
    """Tensors and metadata; `framework="numpy"` gives numpy arrays and needs no torch."""
    return _open(path, with_tensors=True, framework=framework)


def _open(path: Path, with_tensors: bool, framework: str = "numpy") -> Checkpoint:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Train one with `devise train DATA --out {path}`."
        )
    try:
        with safe_open(str(path), framework=framework) as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types on bad headers
        raise CheckpointError(
            f"{path} is not a devise-search checkpoint (not a safetensors file: {e}). "
            "Checkpoints are never unpickled; retrain with `devise train`."
        ) from e
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without devise-search metadata")
    return Checkpoint(tensors, _check(path, raw))


def _check(path: Path, raw: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt metadata (not an object)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} was written by another version (format {meta.get('format')!r}, "
            f"this version reads {FORMAT!r}); retrain it with `devise train`."
        )
    return meta
