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

from model.images import ImageError, Preprocess, decode_image_info, to_array

#: Batches decoded ahead of the one being embedded: enough to hide decode jitter, small
#: enough that 3 x 32 x 3 x 224 x 224 float32 (~58 MB) bounds the memory.
LOOKAHEAD_BATCHES = 3


@dataclass
class Batch:
    indices: list[int]  # positions in the input sequence of the images that decoded
    arrays: list[npt.NDArray[np.float32]]  # one (len(indices), 3, H, W) array per spec
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each file's own (w, h)
    failures: list[tuple[int, ImageError]] = field(default_factory=list)
    wait_s: float = 0.0  # how long the consumer waited for this batch (loader starvation)

    @property
    def array(self) -> npt.NDArray[np.float32]:
        """The array for the first (usually only) preprocessing spec."""
        return self.arrays[0]


def _empty(spec: Preprocess) -> npt.NDArray[np.float32]:
    return np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)


def _load_chunk(
    chunk: Sequence[tuple[int, str | os.PathLike[str] | bytes]], specs: Sequence[Preprocess]
) -> Batch:
    per_spec: list[list[npt.NDArray[np.float32]]] = [[] for _ in specs]
    indices: list[int] = []
    sizes: list[tuple[int, int]] = []
    failures: list[tuple[int, ImageError]] = []
    draft = max(s.resize for s in specs)
    for i, src in chunk:
        try:
            info = decode_image_info(src, draft_size=draft)
            arrays = [to_array(info.image, spec) for spec in specs]
        except ImageError as e:
            failures.append((i, e))
            continue
        for acc, arr in zip(per_spec, arrays, strict=True):
            acc.append(arr)
        indices.append(i)
        sizes.append((info.width, info.height))
    stacked = [np.stack(a) if a else _empty(s) for a, s in zip(per_spec, specs, strict=True)]
    return Batch(indices, stacked, sizes, failures)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def iter_batches(
    sources: Sequence[str | os.PathLike[str] | bytes],
    spec: Preprocess | Sequence[Preprocess],
    batch_size: int = 32,
    workers: int | None = None,
    lookahead: int = LOOKAHEAD_BATCHES,
) -> Iterator[Batch]:
    """Yield decoded batches in input order; bad images are reported in `Batch.failures`.

    With several preprocessing specs (backbones that differ in size or normalisation),
    each image is decoded once and preprocessed once per spec.
    """
    specs = [spec] if isinstance(spec, Preprocess) else list(spec)
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
                    pool.submit(_load_chunk, chunk[j : j + step], specs)
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
            yield Batch(
                indices=[i for b in done for i in b.indices],
                arrays=[np.concatenate([b.arrays[s] for b in done]) for s in range(len(specs))],
                sizes=[sz for b in done for sz in b.sizes],
                failures=[f for b in done for f in b.failures],
                wait_s=wait,
            )
