"""The files of an Edge index besides Edge's own data: the lock that holds the owner's PID
(root/store.pid), the meta document (root/meta.json), the config each shard persists, and
the read that brings a shard's graphs into the OS's page cache."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from qdrant import graphbuild
from qdrant.errors import IndexInUseError, StoreError

META_FILE = "meta.json"
PID_FILE = "store.pid"


def holder_pid(root: Path) -> str:
    """The PID written in root/store.pid, for messages."""
    try:
        return (root / PID_FILE).read_text(encoding="ascii").strip() or "unknown"
    except OSError:
        return "unknown"


class PidLock:
    """An exclusive flock on root/store.pid, which holds the owner's PID for messages.

    flock conflicts between two opens in the same process too, so a second EdgeStore on
    the same root fails here, before Edge's own WAL lock, with a message naming the PID.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / PID_FILE
        self._file: IO[str] | None = None

    def acquire(self, root: Path) -> None:
        f = open(self.path, "a+", encoding="ascii")  # held open, and locked, until release()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise IndexInUseError(
                f"index {root} is in use by PID {pid}; close that process or use another --index"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is None:
            return
        # unlink before unlocking, so nobody reads a PID that no longer holds the lock
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._file.close()
        self._file = None


class MetaFile:
    """The meta document in root/meta.json.

    Its text is kept while the file's stat is unchanged: a search reads the meta several
    times, and open + read was a fifth of a served search's CPU (bench/bench_serve.py).
    Each read parses afresh, so a caller may change what it gets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # the file's text, keyed by its (inode, mtime, size)
        self._text: tuple[tuple[int, int, int], str] | None = None

    def read(self) -> dict[str, Any]:
        """The meta document ({} if absent)."""
        path = self.root / META_FILE
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._text
        if cached is None or cached[0] != key:
            cached = (key, path.read_text(encoding="utf-8"))
            self._text = cached
        try:
            data = json.loads(cached[1])
        except json.JSONDecodeError as e:
            raise StoreError(f"{path} is not valid JSON: {e}") from e
        return data if isinstance(data, dict) else {}

    def write(self, meta: dict[str, Any]) -> None:
        """Replace the file atomically (temp file, fsync, rename, fsync the directory)."""
        text = json.dumps(meta, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".meta.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / META_FILE)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        graphbuild.fsync_dir(self.root)


def persisted_config(shard: Path) -> dict[str, Any]:
    """The config a shard persists beside itself (Edge rewrites it when a vector is added);
    {} before it has one."""
    path = shard / "edge_config.json"
    if not path.exists():
        return {}
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return config


def persisted_sizes(shard: Path) -> dict[str, int]:
    """The named vectors of a shard and their dimensions, as its config says."""
    vectors = persisted_config(shard).get("vectors", {})
    return {str(k): int(v["size"]) for k, v in vectors.items()}


def persisted_memory(shard: Path) -> str | None:
    """Where the shard's int8 copies live, as its config says ("cold", "cached",
    "pinned"); None for a shard without quantised vectors."""
    for params in persisted_config(shard).get("vectors", {}).values():
        scalar = ((params or {}).get("quantization_config") or {}).get("scalar") or {}
        if scalar.get("memory"):
            return str(scalar["memory"])
    return None


#: what a graph walk reads: each vector's int8 copies and graph links, warmed in this order
WARM_FILES = ("vector_storage-{}/quantized.data", "vector_index-{}/links_compressed.bin")
_WARM_CHUNK = 8 << 20


def warm_paths(shard: Path, order: list[str]) -> list[Path]:
    """The files of `shard` that warm() reads, for the vectors in `order`, in that order."""
    segments = sorted((shard / "segments").glob("*"))
    return [
        seg / pattern.format(vec)
        for pattern in WARM_FILES
        for vec in order
        for seg in segments
        if (seg / pattern.format(vec)).exists()
    ]


def warm(paths: list[Path], stop: threading.Event, done: threading.Event) -> None:
    """Reads `paths` through once, so that their pages are in the OS's cache when a graph
    walk needs them (Edge drops them from the cache when a shard closes). The GIL is
    released while each chunk is read."""
    buf = bytearray(_WARM_CHUNK)
    try:
        for path in paths:
            with contextlib.suppress(OSError), open(path, "rb", buffering=0) as f:
                while not stop.is_set() and f.readinto(buf):
                    pass
            if stop.is_set():
                return
    finally:
        done.set()
