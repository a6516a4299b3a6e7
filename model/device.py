"""Where the models run: the CPU (the OpenVINO fast path, as before) or a CUDA GPU.

Everything device-specific lives here, so that the rest of `model/` asks plain questions:
which device (`resolve_device`), how big a batch (`default_batch_size`), how many decode
threads (`decode_workers`), which autocast dtype (`autocast_dtype`), what to do when the GPU
runs out of memory (`OomBackoff`), and how to decode a JPEG on the GPU (`GpuJpegDecoder`).

- `--device auto|cpu|cuda[:N]`, default `$DEVISE_DEVICE`, else `auto`: CUDA when
  `torch.cuda.is_available()`, else the CPU. The CLI resolves it once at the edge and sets
  it as this process's default (`set_default_device`), as `--runtime` does; functions below
  the edge take an explicit `device=` that overrides it.
- On the CPU nothing changes: OpenVINO runs the backbones, and torch is not asked about
  CUDA unless a device was named.
- torch is imported lazily: a CPU query served from the compiled-model cache never loads it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")

#: Default batch sizes: a GPU needs far larger batches than the CPU to be kept busy.
CPU_BATCH = 32
CUDA_BATCH = 256
#: The CPU path keeps its cap; the GPU path decodes (or parses headers) on every core.
CPU_MAX_DECODE_THREADS = 8
CUDA_MAX_DECODE_THREADS = 32


class DeviceError(ValueError):
    """A device name that is malformed, or names a GPU that is not here."""


@dataclass(frozen=True)
class Device:
    """A resolved device: `kind` is "cpu" or "cuda"; `index` the GPU's number."""

    kind: Literal["cpu", "cuda"]
    index: int = 0
    reason: str = ""

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def torch_name(self) -> str:
        """The name torch takes: "cpu" or "cuda:N"."""
        return f"cuda:{self.index}" if self.is_cuda else "cpu"

    def __str__(self) -> str:
        return self.torch_name


CPU = Device("cpu", 0, "the CPU")


def _no_gpu_here() -> bool:
    """True when, on Linux, no NVIDIA (or WSL GPU) device node exists, or CUDA_VISIBLE_DEVICES
    hides every GPU: then `auto` is the CPU without importing torch, so a CPU query served
    from the compiled-model cache starts as fast as before."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    if not sys.platform.startswith("linux"):
        return False
    return not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg"))


def _cuda_count() -> int:
    if _no_gpu_here():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(
    spec: str | None = None, *, cuda_count: Callable[[], int] | None = None
) -> Device:
    """`spec` ("auto", "cpu", "cuda", "cuda:N"; None: `$DEVISE_DEVICE`, else auto) as a
    `Device`. Raises `DeviceError`, one line naming `--device cpu`, when a GPU is asked for
    and none is here. `cuda_count` replaces `torch.cuda.device_count` (tests)."""
    raw = (spec or os.environ.get("DEVISE_DEVICE") or "auto").strip().lower()
    m = _SPEC.match(raw)
    if m is None or (m.group(1) != "cuda" and m.group(2) is not None):
        where = " (from $DEVISE_DEVICE)" if not spec and os.environ.get("DEVISE_DEVICE") else ""
        raise DeviceError(f"unknown device {raw!r}{where}: use {DEVICE_CHOICES}")
    kind = m.group(1)
    if kind == "cpu":
        return Device("cpu", 0, "asked for (--device cpu)")
    count = (cuda_count or _cuda_count)()
    if kind == "auto":
        if count:
            return Device("cuda", 0, "auto: torch.cuda.is_available() is true")
        return Device("cpu", 0, "auto: no CUDA GPU (torch.cuda.is_available() is false)")
    index = int(m.group(2) or 0)
    if not count:
        raise DeviceError(
            f"--device {raw}: no CUDA GPU is available here (torch.cuda.is_available() is "
            "false); use --device cpu (or --device auto)"
        )
    if index >= count:
        raise DeviceError(
            f"--device {raw}: there are only {count} CUDA GPU(s) (cuda:0..cuda:{count - 1}); "
            "use one of those or --device cpu"
        )
    return Device("cuda", index, f"asked for (--device {raw})")


_default: Device | None = None
_logged: set[Device] = set()
_log_lock = threading.Lock()


def set_default_device(device: Device | None) -> Device | None:
    """Set this process's device (None: resolve `$DEVISE_DEVICE`/auto on first use);
    returns the previous setting so in-process callers (tests, the demo) can restore it."""
    global _default
    previous, _default = _default, device
    return previous


def default_device() -> Device:
    """The device set at the edge. Without one, the CPU: code below the edge never probes
    CUDA by itself, so library callers and tests keep today's CPU behaviour."""
    return _default if _default is not None else CPU


def pick(device: Device | str | None) -> Device:
    """An explicit device (a `Device` or a name), else the process default."""
    if device is None:
        return default_device()
    if isinstance(device, Device):
        return device
    return resolve_device(device)


def announce(device: Device) -> None:
    """Log once per process, at info level, which device runs the models and why."""
    with _log_lock:
        if device in _logged:
            return
        _logged.add(device)
    if device.is_cuda:
        import torch

        name = torch.cuda.get_device_name(device.index)
        log.info("device: %s (%s), %s", device.torch_name, name, device.reason)
    else:
        log.info("device: cpu (the OpenVINO fast path where installed), %s", device.reason)


def default_batch_size(device: Device | None, cpu: int = CPU_BATCH, cuda: int = CUDA_BATCH) -> int:
    """The batch size to use when none was given: larger on a GPU."""
    return cuda if device is not None and device.is_cuda else cpu


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def decode_workers(device: Device | None = None) -> int:
    """Decode threads: one per core, capped at 8 on the CPU path (as before: the backbone
    needs the cores too) and at 32 on the GPU path (where decoding is the bottleneck)."""
    cap = (
        CUDA_MAX_DECODE_THREADS if device is not None and device.is_cuda else CPU_MAX_DECODE_THREADS
    )
    return max(1, min(cap, available_cores()))


def prepare(device: Device) -> None:
    """Process-wide settings for a CUDA device: cudnn picks the fastest kernels for the
    (fixed) input shape. Nothing happens for the CPU."""
    if not device.is_cuda:
        return
    import torch

    torch.backends.cudnn.benchmark = True
    torch.cuda.set_device(device.index)


def autocast_dtype(device: Device) -> torch.dtype | None:
    """bf16 where the GPU runs it natively (Ampere and later), else fp16; None on the CPU."""
    if not device.is_cuda:
        return None
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError)


class OomBackoff:
    """Run work in slices of at most `batch_size`; on CUDA out-of-memory, halve the slice,
    say so once per halving, and retry. The reduced size is kept for later calls, so a
    long ingest pays for the discovery once. Below one item the error is raised."""

    def __init__(self, batch_size: int | None = None, what: str = "batch") -> None:
        self.batch_size = batch_size
        self.what = what
        self._lock = threading.Lock()

    def run(self, fn: Callable[[int, int], T], n: int) -> list[T]:
        """`fn(start, stop)` over `range(n)` in slices; the results in order."""
        out: list[T] = []
        start = 0
        while start < n:
            size = min(self.batch_size or n, n - start)
            try:
                out.append(fn(start, start + size))
                start += size
                continue
            except Exception as e:
                if not is_oom(e) or size <= 1:
                    raise
            # outside the except block: the failed call's frames (and their GPU tensors) are
            # released before the cache is emptied
            self._halve(size)
        return out

    def _halve(self, size: int) -> None:
        with self._lock:
            new = max(1, size // 2)
            if self.batch_size is None or new < self.batch_size:
                self.batch_size = new
        _empty_cache()
        log.warning(
            "out of GPU memory with a %s of %d; retrying with %d (pass a smaller "
            "--batch-size to skip this)",
            self.what,
            size,
            self.batch_size,
        )


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def to_device(x: Any, device: Device) -> torch.Tensor:
    """A numpy array or CPU tensor on `device`: through pinned memory with a non-blocking
    copy, so the copy overlaps the work already queued on the GPU."""
    import torch

    t = torch.as_tensor(x)
    if not device.is_cuda or t.device.type == "cuda":
        return t.to(device.torch_name)
    return t.pin_memory().to(device.torch_name, non_blocking=True)


# ------------------------------------------------------------------ GPU JPEG decoding


@dataclass(frozen=True)
class JpegJob:
    """A JPEG whose header passed every check of `model.data.images.decode_image_info`, left for
    nvJPEG to decode: its bytes, upright size and EXIF orientation."""

    data: bytes
    width: int  # upright (after orientation)
    height: int
    orientation: int


def rotate_chw(x: torch.Tensor, orientation: int) -> torch.Tensor:
    """Make a (C, H, W) picture upright, as `PIL.Image.transpose` does for `orientation`
    (the EXIF values 2..8; 1 or anything else is left as it is)."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return x.flip(-1)
    if orientation == 3:  # ROTATE_180
        return x.flip(-1).flip(-2)
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return x.flip(-2)
    if orientation == 5:  # TRANSPOSE
        return x.transpose(-1, -2)
    if orientation == 6:  # ROTATE_270 (90 clockwise)
        return x.transpose(-1, -2).flip(-1)
    if orientation == 7:  # TRANSVERSE
        return x.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:  # ROTATE_90 (counter-clockwise)
        return x.transpose(-1, -2).flip(-2)
    return x


def crop_resize_normalise(
    x: torch.Tensor,
    size: int,
    resize: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """`model.data.images.to_array` in torch, for a (3, H, W) uint8 picture (any device): the
    centre crop of side min(H, W) * size / resize, resized to `size` with antialiased
    bilinear filtering (PIL's reducing resize), normalised; (3, size, size) float32."""
    from torch.nn import functional as F

    _, h, w = x.shape
    side = min(w, h) * size / resize
    left, top = (w - side) / 2, (h - side) / 2
    x0, y0 = max(0, int(left)), max(0, int(top))
    x1, y1 = min(w, max(x0 + 1, round(left + side))), min(h, max(y0 + 1, round(top + side)))
    crop = x[:, y0:y1, x0:x1].unsqueeze(0).float()
    out = F.interpolate(
        crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    m, s = _norm_tensors(tuple(mean), tuple(std), str(x.device))
    return ((out - m) / s)[0]


def small_picture(x: torch.Tensor, side: int) -> Any:
    """A (3, H, W) uint8 picture (any device) as a PIL RGB image, its longest side at most
    `side`, reduced where it lies: what a detector looks at (`model.detectors.faces`)
    without a second decode of an nvJPEG-decoded file."""
    import torch
    from PIL import Image
    from torch.nn import functional as F

    _, h, w = x.shape
    scale = min(1.0, side / max(h, w))
    small = x.unsqueeze(0).float()
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = F.interpolate(small, size=size, mode="bilinear", antialias=True)
    pixels = small[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels, "RGB")


@functools.lru_cache(maxsize=16)
def _norm_tensors(
    mean: tuple[float, ...], std: tuple[float, ...], device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (in 0..255 units) on `device`, made once: a fresh tensor per image would
    be a synchronous host-to-device copy that stalls the GPU's queue."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return m.to(device), s.to(device)


class GpuJpegDecoder:
    """JPEG bytes -> upright RGB (3, H, W) uint8 tensors on the GPU, through nvJPEG
    (`torchvision.io.decode_jpeg(..., device="cuda")`). A file nvJPEG refuses comes back
    as None, and the caller decodes it on the CPU, where every bad-file rule applies."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.refused = 0  # files handed back to the CPU decoder

    @staticmethod
    def available(device: Device) -> bool:
        """Whether nvJPEG can run: a CUDA device and a torchvision with GPU decoding."""
        if not device.is_cuda:
            return False
        try:
            from torchvision.io import decode_jpeg  # noqa: F401
        except Exception:  # noqa: BLE001 - an old or CPU-only torchvision
            return False
        return True

    def decode(self, jobs: Sequence[JpegJob]) -> list[torch.Tensor | None]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        if not jobs:
            return []
        datas = [torch.frombuffer(bytearray(j.data), dtype=torch.uint8) for j in jobs]
        outs: list[Any]
        try:  # one batched call: nvJPEG decodes the batch together
            outs = list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device.torch_name))
        except Exception:  # noqa: BLE001 - one bad file fails the batch: retry one by one
            outs = []
            for d in datas:
                try:
                    outs.append(
                        decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device.torch_name)
                    )
                except Exception:  # noqa: BLE001 - the CPU decoder will say what is wrong
                    outs.append(None)
        result: list[torch.Tensor | None] = []
        for job, img in zip(jobs, outs, strict=True):
            if img is None:
                self.refused += 1
                result.append(None)
                continue
            img = rotate_chw(img, job.orientation)
            if tuple(img.shape[1:]) != (job.height, job.width):  # not what the header said
                self.refused += 1
                result.append(None)
                continue
            result.append(img)
        return result


# ------------------------------------------------------------------ running on the GPU


class GpuRunner:
    """A forward pass on the GPU under bf16/fp16 autocast, in slices that back off on
    out-of-memory. On its first non-empty batch the mixed-precision output is checked
    against fp32 on the same batch; below `MIN_COSINE` it runs fp32 from then on, and says so.
    Returns float32 tensors on the GPU."""

    #: results must not change: mixed precision must agree with fp32 at least this well
    MIN_COSINE = 0.999

    def __init__(
        self, device: Device, what: str, *, mixed: bool = True, batch_size: int | None = None
    ) -> None:
        self.device = device
        self.what = what
        self.dtype = autocast_dtype(device) if mixed else None
        self.backoff = OomBackoff(batch_size, what=f"{what} batch")
        self._checked = not mixed

    def _run(self, forward: Callable[[Any], Any], x: Any, dtype: Any) -> Any:
        import contextlib

        import torch

        def part(start: int, stop: int) -> Any:
            amp = (
                torch.autocast("cuda", dtype=dtype)
                if dtype is not None
                else contextlib.nullcontext()
            )
            with amp:
                return forward(x[start:stop]).float()

        outs = self.backoff.run(part, len(x))
        return torch.cat(outs) if len(outs) != 1 else outs[0]

    def __call__(self, forward: Callable[[Any], Any], x: Any) -> Any:
        import torch

        out = self._run(forward, x, self.dtype)
        if not self._checked and len(x):
            self._checked = True
            exact = self._run(forward, x, None)
            cos = float(torch.nn.functional.cosine_similarity(out, exact, dim=1).min())
            if cos < self.MIN_COSINE:
                log.warning(
                    "%s: %s autocast agrees with fp32 only to cosine %.4f (< %.3f) on the "
                    "first batch; using fp32 on the GPU",
                    self.what,
                    str(self.dtype).removeprefix("torch."),
                    cos,
                    self.MIN_COSINE,
                )
                self.dtype = None
                return exact
            log.info(
                "%s: %s autocast on the GPU (cosine %.5f against fp32)",
                self.what,
                str(self.dtype).removeprefix("torch."),
                cos,
            )
        return out
