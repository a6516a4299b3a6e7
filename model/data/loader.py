"""Decode and preprocess images in loader threads, a bounded number of batches ahead.

PIL releases the GIL while it decodes and resizes, so a thread pool keeps the backbone's
forward pass fed without the cost of processes. The look-ahead is bounded (like rclip's
LOOKAHEAD_BATCHES = 3) so memory stays flat however large the folder is.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.data.images import ImageError, Preprocess, decode_image_info, jpeg_for_gpu, to_array
from model.device import Device, decode_workers

if TYPE_CHECKING:
    import torch

    from model.device import GpuJpegDecoder, JpegJob

#: Batches decoded ahead of the one being embedded: enough to hide decode jitter, small
#: enough that 3 x 32 x 3 x 224 x 224 float32 (~58 MB) bounds the memory.
LOOKAHEAD_BATCHES = 3
#: JPEGs nvJPEG decodes in one call: enough to batch the work, few enough that 12-megapixel
#: pictures hold about 1.2 GB of GPU memory (32 x 36 MB) at a time
GPU_DECODE_GROUP = 32
#: the longest side of the copy an `inspect` hook sees of an nvJPEG-decoded picture (the
#: face detector shrinks further, to `model.detectors.faces.SIDE`)
INSPECT_SIDE = 320


@dataclass
class Batch:
    indices: list[int]  # positions in the input sequence of the images that decoded
    # one (len(indices), 3, H, W) float32 array per spec; on a CUDA device, a torch tensor
    # already on the GPU (typed Any: numpy on the CPU path, torch on the GPU path)
    arrays: list[Any]
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each file's own (w, h)
    failures: list[tuple[int, ImageError]] = field(default_factory=list)
    wait_s: float = 0.0  # how long the consumer waited for this batch (loader starvation)
    #: per decoded image (as `indices`), what the `inspect` hook of `iter_batches` found
    inspected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def array(self) -> Any:
        """The array for the first (usually only) preprocessing spec."""
        return self.arrays[0]


def _empty(spec: Preprocess) -> npt.NDArray[np.float32]:
    return np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)


def _load_chunk(
    chunk: Sequence[tuple[int, str | os.PathLike[str] | bytes]],
    specs: Sequence[Preprocess],
    inspect: Inspect | None = None,
    keep: Keep | None = None,
) -> Batch:
    per_spec: list[list[npt.NDArray[np.float32]]] = [[] for _ in specs]
    indices: list[int] = []
    sizes: list[tuple[int, int]] = []
    failures: list[tuple[int, ImageError]] = []
    inspected: list[dict[str, Any]] = []
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
        inspected.append(inspect(info.image) if inspect is not None else {})
        if keep is not None and not isinstance(src, bytes):
            keep(os.fspath(src), info.image)
    stacked = [np.stack(a) if a else _empty(s) for a, s in zip(per_spec, specs, strict=True)]
    return Batch(indices, stacked, sizes, failures, inspected=inspected)


def default_workers(device: Device | None = None) -> int:
    """Decode threads: one per core this process may use, capped (`model.device`)."""
    return decode_workers(device)


def iter_batches(
    sources: Sequence[str | os.PathLike[str] | bytes],
    spec: Preprocess | Sequence[Preprocess],
    batch_size: int = 32,
    workers: int | None = None,
    lookahead: int = LOOKAHEAD_BATCHES,
    device: Device | None = None,
    gpu_decode: bool = True,
    inspect: Inspect | None = None,
    keep: Keep | None = None,
) -> Iterator[Batch]:
    """Yield decoded batches in input order; bad images are reported in `Batch.failures`.

    `inspect`, when given, runs on each decoded picture in the loader threads (a face
    detector); its answers arrive in `Batch.inspected`. `keep(path, picture)` is given
    each file's picture decoded by PIL (the app's thumbnails of HEIC files).

    With several preprocessing specs (backbones that differ in size or normalisation),
    each image is decoded once and preprocessed once per spec.

    On a CUDA `device` the arrays arrive on the GPU as torch tensors: JPEGs are decoded
    there by nvJPEG (`gpu_decode`, where torchvision has it) after their headers passed
    the usual checks in the loader threads; other files are decoded by PIL as always and
    copied over from pinned memory.
    """
    specs = [spec] if isinstance(spec, Preprocess) else list(spec)
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    if device is not None and device.is_cuda:
        yield from _iter_batches_cuda(
            sources,
            specs,
            batch_size,
            workers or default_workers(device),
            lookahead,
            device,
            gpu_decode,
            inspect,
            keep,
        )
        return
    items = list(enumerate(sources))
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if not chunks:
        return
    # Split each batch across the threads so one batch is ready as soon as possible.
    n_workers = workers or default_workers()

    def load(c: Chunk) -> Batch:
        return _load_chunk(c, specs, inspect, keep)

    for done, wait in _ahead(chunks, n_workers, lookahead, load):
        yield Batch(
            indices=[i for b in done for i in b.indices],
            arrays=[np.concatenate([b.arrays[s] for b in done]) for s in range(len(specs))],
            sizes=[sz for b in done for sz in b.sizes],
            failures=[f for b in done for f in b.failures],
            wait_s=wait,
            inspected=[x for b in done for x in b.inspected],
        )


T = TypeVar("T")
#: per-image work on the decoded picture, run in the loader threads beside the decode (a face
#: detector: `model.detectors.faces`); what it returns travels in `Batch.inspected`
Inspect = Callable[[Image.Image], dict[str, Any]]
#: what keeps a file's decoded picture (its path, the picture), in the loader threads
Keep = Callable[[str, Image.Image], None]
Chunk = list[tuple[int, str | os.PathLike[str] | bytes]]


def _ahead(
    chunks: list[Chunk], n_workers: int, lookahead: int, load: Callable[[Chunk], T]
) -> Iterator[tuple[list[T], float]]:
    """Each chunk's loaded parts, in order, with the seconds spent waiting for them.

    Every chunk is split across the threads so that one batch is ready as soon as possible,
    and at most `lookahead` chunks are loaded ahead of the consumer (bounded memory)."""
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="decode") as pool:
        pending: deque[list[Future[T]]] = deque()

        def submit(chunk: Chunk) -> None:
            step = max(1, -(-len(chunk) // n_workers))
            pending.append(
                [pool.submit(load, chunk[j : j + step]) for j in range(0, len(chunk), step)]
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
            yield done, wait


# ------------------------------------------------------------------ the CUDA path


@dataclass
class _CudaPart:
    """What one loader thread made of its share of a batch: PIL-decoded arrays, and JPEGs
    whose headers passed, left for nvJPEG."""

    cpu: Batch
    jobs: list[tuple[int, JpegJob]] = field(default_factory=list)


def _load_chunk_cuda(
    chunk: Sequence[tuple[int, str | os.PathLike[str] | bytes]],
    specs: Sequence[Preprocess],
    nvjpeg: bool,
    inspect: Inspect | None = None,
    keep: Keep | None = None,
) -> _CudaPart:
    from model.device import JpegJob

    if not nvjpeg:
        return _CudaPart(_load_chunk(chunk, specs, inspect, keep))
    rest: list[tuple[int, str | os.PathLike[str] | bytes]] = []
    jobs: list[tuple[int, JpegJob]] = []
    failures: list[tuple[int, ImageError]] = []
    for i, src in chunk:
        try:
            found = jpeg_for_gpu(src)
        except ImageError as e:
            failures.append((i, e))
            continue
        if found is None:
            rest.append((i, src))
        else:
            jobs.append((i, JpegJob(*found)))
    cpu = _load_chunk(rest, specs, inspect, keep)
    cpu.failures.extend(failures)
    return _CudaPart(cpu, jobs)


def _gpu_arrays(
    decoder: GpuJpegDecoder,
    jobs: list[tuple[int, JpegJob]],
    sources: Sequence[str | os.PathLike[str] | bytes],
    specs: Sequence[Preprocess],
    inspect: Inspect | None = None,
) -> tuple[
    dict[int, list[torch.Tensor]],
    dict[int, tuple[int, int]],
    list[tuple[int, Any]],
    dict[int, dict[str, Any]],
]:
    """nvJPEG-decoded, preprocessed tensors per image; a file nvJPEG refused is decoded
    by PIL here instead, so its bad-file rules (and error) are exactly the CPU path's.
    `inspect` sees a small copy of each picture (`INSPECT_SIDE`), made on the GPU."""
    from model.device import crop_resize_normalise, small_picture, to_device

    tensors: dict[int, list[torch.Tensor]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    failures: list[tuple[int, Any]] = []
    inspected: dict[int, dict[str, Any]] = {}
    draft = max(s.resize for s in specs)
    # in groups: a batch of 12-megapixel pictures decoded at once would hold gigabytes of
    # GPU memory; each group is preprocessed (to 224 px) before the next is decoded
    group = GPU_DECODE_GROUP
    decoded = (
        (jobs[k + n], img)
        for k in range(0, len(jobs), group)
        for n, img in enumerate(decoder.decode([j for _, j in jobs[k : k + group]]))
    )
    for (i, job), img in decoded:
        if img is not None:
            tensors[i] = [
                crop_resize_normalise(img, s.size, s.resize, s.mean, s.std) for s in specs
            ]
            sizes[i] = (job.width, job.height)
            if inspect is not None:
                inspected[i] = inspect(small_picture(img, INSPECT_SIDE))
            continue
        try:
            info = decode_image_info(sources[i], draft_size=draft)
        except ImageError as e:
            failures.append((i, e))
            continue
        tensors[i] = [to_device(to_array(info.image, s), decoder.device) for s in specs]
        sizes[i] = (info.width, info.height)
        if inspect is not None:
            inspected[i] = inspect(info.image)
    return tensors, sizes, failures, inspected


def _iter_batches_cuda(
    sources: Sequence[str | os.PathLike[str] | bytes],
    specs: list[Preprocess],
    batch_size: int,
    n_workers: int,
    lookahead: int,
    device: Device,
    gpu_decode: bool,
    inspect: Inspect | None = None,
    keep: Keep | None = None,
) -> Iterator[Batch]:
    import torch

    from model.device import GpuJpegDecoder, to_device

    decoder = GpuJpegDecoder(device)
    nvjpeg = gpu_decode and GpuJpegDecoder.available(device)
    items = list(enumerate(sources))
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if not chunks:
        return

    def load(chunk: Chunk) -> _CudaPart:
        return _load_chunk_cuda(chunk, specs, nvjpeg, inspect, keep)

    for done, wait in _ahead(chunks, n_workers, lookahead, load):
        per_image: dict[int, list[torch.Tensor]] = {}
        sizes: dict[int, tuple[int, int]] = {}
        failures: list[tuple[int, Any]] = []
        inspected: dict[int, dict[str, Any]] = {}
        for part in done:
            b = part.cpu
            failures.extend(b.failures)
            if b.indices:  # one pinned, non-blocking copy per spec for the PIL-decoded
                moved = [to_device(a, device) for a in b.arrays]
                for k, (i, sz) in enumerate(zip(b.indices, b.sizes, strict=True)):
                    per_image[i] = [m[k] for m in moved]
                    sizes[i] = sz
                    inspected[i] = b.inspected[k] if b.inspected else {}
        jobs = [j for part in done for j in part.jobs]
        if jobs:
            t, s, f, seen = _gpu_arrays(decoder, jobs, sources, specs, inspect)
            per_image.update(t)
            sizes.update(s)
            failures.extend(f)
            inspected.update(seen)
        order = sorted(per_image)
        arrays = [
            torch.stack([per_image[i][k] for i in order])
            if order
            else torch.zeros((0, 3, sp.size, sp.size), device=device.torch_name)
            for k, sp in enumerate(specs)
        ]
        yield Batch(
            indices=order,
            arrays=arrays,
            sizes=[sizes[i] for i in order],
            failures=sorted(failures, key=lambda x: x[0]),
            wait_s=wait,
            inspected=[inspected.get(i, {}) for i in order],
        )
