"""The images shard's graphs built in another process, on a copy, while the store that
holds the index keeps answering: what `devise serve` runs after an ingest, and at open.

Edge's optimize() holds the GIL for its whole run (13 minutes at 1,000,000 points on a
2-core Xeon), so it cannot run in the app's own threads, and an index admits one process.
So the app
1. copies the images shard while it takes no writes (EdgeStore.begin_graph_build);
2. runs `python -m qdrant.builder COPY` at a lower priority: it loads the copy with the
   config the live shard persisted, optimizes it and closes it. The app meanwhile searches
   its own shard exactly and takes writes again, noting every image point it writes;
3. writes those points into the built copy and swaps it in (EdgeStore.finish_graph_build):
   searches wait for one shard load (about 2 s at 1,000,000 points).

Layout under the index root, gone once the swap is done:
    root/.graph-build/images      the copy being built
    root/.graph-build/old         the shard it replaces, between the swap's two renames
    root/.graph-build/build.log   what the builder printed
A store that opens finds what a killed app left there and puts it right (recover).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from qdrant.errors import StoreError

WORK_DIR = ".graph-build"
COPY_DIR = "images"
OLD_DIR = "old"
LOG_FILE = "build.log"
#: free disk asked for, in sizes of the shard: its copy, and the segments optimize()
#: writes beside the copy's before it drops them (at most the copy's size again), with a
#: margin for the writes that arrive meanwhile
DISK_FACTOR = 2.2
#: image points written during a build past which the build is dropped and done again:
#: replaying them into the copy would take longer than a new build's copy
JOURNAL_MAX = 200_000


@dataclass
class GraphBuild:
    """One background build: the copy the builder process opens, and what it started from."""

    root: Path  # the index's root
    sizes: dict[str, int]  # the image vectors the copy has
    points: int  # image points in the copy
    started: float = field(default_factory=time.time)

    @property
    def work(self) -> Path:
        return self.root / WORK_DIR

    @property
    def path(self) -> Path:
        """The copy of the images shard."""
        return self.work / COPY_DIR

    @property
    def log(self) -> Path:
        return self.work / LOG_FILE

    def command(self) -> list[str]:
        """The builder process's command line: this Python, this module, the copy and the
        PID it must die with."""
        return [sys.executable, "-m", "qdrant.builder", str(self.path), str(os.getpid())]


def tree_bytes(path: Path) -> int:
    """The bytes of the files under `path` (as allocated: sparse files count what they use)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def check_disk(shard: Path, root: Path) -> int:
    """The shard's size in bytes; raises StoreError naming both figures when the disk under
    `root` lacks DISK_FACTOR times it."""
    size = tree_bytes(shard)
    free = shutil.disk_usage(root).free
    need = int(size * DISK_FACTOR)
    if free < need:
        raise StoreError(
            f"not enough free disk to build the search graph in the background: it copies "
            f"the index ({size / 1e9:.1f} GB) and needs {need / 1e9:.1f} GB free under "
            f"{root}, which has {free / 1e9:.1f} GB. Free some space, or stop the app and "
            "run `devise ingest`, which builds it in place"
        )
    return size


def copy_shard(src: Path, dst: Path) -> None:
    """A copy of shard directory `src` at `dst`, without a killed optimize()'s leftovers.
    The kernel copies the bytes (sendfile), so the caller's other threads keep the GIL."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("temp_segments"))


def fsync_dir(path: Path) -> None:
    """Makes a rename in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap(root: Path, name: str) -> None:
    """Puts the built copy in place of shard `name` (closed by the caller): two renames, so
    that a kill between them leaves the old shard whole in OLD_DIR, which recover() puts
    back."""
    work = root / WORK_DIR
    os.rename(root / name, work / OLD_DIR)
    os.rename(work / COPY_DIR, root / name)
    fsync_dir(root)


def unswap(root: Path, name: str) -> None:
    """Undoes swap() when the built shard would not load: the old one back in place."""
    work = root / WORK_DIR
    failed = work / "failed"
    shutil.rmtree(failed, ignore_errors=True)
    os.rename(root / name, failed)
    os.rename(work / OLD_DIR, root / name)
    fsync_dir(root)


def discard(root: Path) -> None:
    """Removes a build's files (the copy, the replaced shard, the log)."""
    shutil.rmtree(root / WORK_DIR, ignore_errors=True)


def recover(root: Path, name: str) -> bool:
    """What a store does at open, holding the index's lock: a kill between swap()'s two
    renames left no shard `name` and the old one whole in OLD_DIR, which goes back; any
    other leftover of a build (a copy half built or built, a replaced shard) goes. True
    when the old shard was put back."""
    work = root / WORK_DIR
    if not work.exists():
        return False
    restored = False
    if not (root / name).exists() and (work / OLD_DIR).is_dir():
        os.rename(work / OLD_DIR, root / name)
        fsync_dir(root)
        restored = True
    discard(root)
    return restored


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines the builder printed, for a message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(text[-lines:])
