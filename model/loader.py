"""Decode and preprocess images in loader threads, a bounded number of batches ahead.

PIL releases the GIL while it decodes and resizes, so a thread pool keeps the backbone's
forward pass fed without the cost of processes. The look-ahead is bounded (like rclip's
LOOKAHEAD_BATCHES = 3) so memory stays flat however large the folder is.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from model.images import ImageError, Preprocess, load_array

#: Batches decoded ahead of the one being embedded: enough to hide decode jitter, small
#: enough that 3 x 32 x 3 x 224 x 224 float32 (~58 MB) bounds the memory.
LOOKAHEAD_BATCHES = 3


@dataclass
class Batch:
    indices: list[int]  # positions in the input sequence of the images that decoded
    array: npt.NDArray[np.float32]  # (len(indices), 3, H, W)
    failures: list[tuple[int, ImageError]] = field(default_factory=list)
    wait_s: float = 0.0  # how long the consumer waited for this batch (loader starvation)


def _load_chunk(
    chunk: Sequence[tuple[int, str | os.PathLike[str] | bytes]], spec: Preprocess
) -> Batch:
    arrays: list[npt.NDArray[np.float32]] = []
    indices: list[int] = []
    failures: list[tuple[int, ImageError]] = []
    for i, src in chunk:
        try:
            arrays.append(load_array(src, spec))
            indices.append(i)
        except ImageError as e:
            failures.append((i, e))
    if arrays:
        array = np.stack(arrays)
    else:
        array = np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)
    return Batch(indices, array, failures)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def iter_batches(
    sources: Sequence[str | os.PathLike[str] | bytes],
    spec: Preprocess,
    batch_size: int = 32,
    workers: int | None = None,
    lookahead: int = LOOKAHEAD_BATCHES,
) -> Iterator[Batch]:
    """Yield decoded batches in input order; bad images are reported in `Batch.failures`."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    items = list(enumerate(sources))
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if not chunks:
        return
    # Split each batch across the threads so one batch is ready as soon as possible.
    n_workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="decode") as pool:
        pending: deque[list[Future[Batch]]] = deque()

        def submit(chunk: list[tuple[int, str | os.PathLike[str] | bytes]]) -> None:
            step = max(1, -(-len(chunk) // n_workers))
            pending.append(
                [
                    pool.submit(_load_chunk, chunk[j : j + step], spec)
                    for j in range(0, len(chunk), step)
                ]
            )

        it = iter(chunks)
        for chunk in it:
            submit(chunk)
            if len(pending) > lookahead:
                break
        while pending:
            parts = pending.popleft()
            t0 = time.perf_counter()
            done = [f.result() for f in parts]
            wait = time.perf_counter() - t0
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            arrays = [b.array for b in done if len(b.indices)]
            yield Batch(
                indices=[i for b in done for i in b.indices],
                array=np.concatenate(arrays) if arrays else done[0].array,
                failures=[f for b in done for f in b.failures],
                wait_s=wait,
            )
