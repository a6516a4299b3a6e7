"""`python -m qdrant.builder SHARD [PARENT_PID]`: the process that builds the graphs of a
copy of the images shard for `devise serve` (qdrant/graphbuild.py says how the copy is made
and swapped in). A module of its own, which the package does not import, so that `-m` runs
it fresh."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: the builder's nice(2) increment where SCHED_IDLE is refused
BUILDER_NICENESS = 10
_PR_SET_PDEATHSIG = 1


def _yield_cpu() -> None:
    """Runs this process, and the threads Edge starts for the build, only when a core is
    otherwise idle (Linux's SCHED_IDLE): the app's searches keep both cores when they want
    them. Where that is refused, a nice(2) of BUILDER_NICENESS."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(BUILDER_NICENESS)


def _die_with(parent: int) -> None:
    """Asks Linux to end this process when the thread that started it ends (the app was
    killed), then checks that the parent did not end before the request was made."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit("the app that started this build has ended")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m qdrant.builder SHARD [PARENT_PID]`: loads shard directory SHARD with
    the config it persisted, builds its graphs (optimize()) and closes it; prints one line
    of JSON with the figures."""
    import qdrant_edge as qe

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not Path(args[0]).is_dir():
        print("usage: python -m qdrant.builder SHARD_DIR [PARENT_PID]", file=sys.stderr)
        return 2
    if len(args) > 1:
        _die_with(int(args[1]))
    _yield_cpu()
    t0 = time.perf_counter()
    shard = qe.EdgeShard.load(args[0])
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    figures = {
        "seconds": round(time.perf_counter() - t0, 2),
        "points": int(info.points_count),
        "indexed_vectors": int(info.indexed_vectors_count),
        "segments": int(info.segments_count),
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
