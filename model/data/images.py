"""Decode any image file into a bounded RGB picture, and turn it into a model input.

`decode_image` is the one pure function every face uses (ingest, search by image, tag,
training). It never raises anything but `ImageError`, whose message names the file and
the reason, so callers can log `skipping PATH: reason` and go on.

`decode_image_info` does the same and also reports the file's own size (for payloads) and
the size the codec actually produced (to see draft mode at work).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, JpegImagePlugin, UnidentifiedImageError

# Never let PIL decode a truncated file into a half-grey picture: that would be indexed
# as if it were good. (This is PIL's default; it is set here so no other import can relax it.)
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Default pixel budget: 64 megapixels is a large camera photo; 40000x40000 bombs are refused.
#: It counts the pixels a decoder produces: a JPEG decoded in draft mode at 1/8 scale counts
#: an eighth of each side, so 100- and 200-megapixel camera and phone JPEGs are read.
MAX_PIXELS = 64_000_000
#: Decoded images are bounded to this longest side before anything else sees them.
MAX_SIDE = 1024
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jfif",
        ".png",
        ".gif",
        ".bmp",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".avif",
        # HEIF: iPhones' photos (.heic), some cameras' (.hif); read by pillow-heif
        ".heic",
        ".heif",
        ".hif",
    }
)
# The PIL decoders we let run, whatever a file's name says. Others are left out on purpose:
# EPS runs Ghostscript, and rarely used parsers (PSD, FITS, TGA, ...) are more attack surface
# than a photo search needs. JPEG covers MPO (phone cameras' multi-picture JPEGs). HEIF is
# pillow-heif's plugin (libheif), AVIF Pillow's own.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "AVIF", "HEIF")
_DRAFTABLE = ("JPEG", "MPO")
# EXIF orientation tag value -> the transpose that makes the picture upright.
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

Float32Array = npt.NDArray[np.float32]
Source = str | os.PathLike[str] | bytes


class ImageError(ValueError):
    """An image that cannot be used. `reason` is a short key used to count failures.

    Reasons: "missing", "unreadable", "empty", "not an image", "too many pixels",
    "truncated or corrupt", "unsupported".
    """

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        self.source = source
        self.reason = reason
        self.detail = detail
        message = f"{printable(source)}: {reason}" + (f" ({printable(detail)})" if detail else "")
        super().__init__(message)


def printable(text: str) -> str:
    """`text` with newlines, control characters and undecodable bytes escaped, so that
    `skipping PATH: reason` stays one line a log can print; other Unicode is kept."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its input: resize the short side, center crop, normalise."""

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture and what was learnt on the way.

    `width` and `height` are the file's own size, upright (after EXIF orientation).
    `decoded_size` is what the codec produced (upright too): smaller than the file's own
    size when JPEG draft mode decoded at 1/2, 1/4 or 1/8 scale. `image` is RGB, its
    longest side at most `max_side`, with no metadata left (no EXIF to rotate it twice).
    """

    image: Image.Image
    width: int
    height: int
    format: str
    decoded_size: tuple[int, int]


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _describe(source: Source) -> str:
    if isinstance(source, bytes):
        return "<upload>"
    return os.fsdecode(source)


@functools.cache
def image_formats() -> tuple[str, ...]:
    """The PIL formats decoded here, HEIF's plugin registered first. PIL's own `Image.open`
    knows HEIF once this has run: the web app calls it at start, since Gradio opens
    uploads with PIL before a handler sees them."""
    Image.init()
    try:
        import pillow_heif  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # HEIC files then fail as "not an image", each named
        pass
    else:
        # libheif applies the file's rotation while decoding, and the plugin then reports
        # EXIF orientation 1, so a photo is never turned twice (tested on an iPhone-like file)
        pillow_heif.register_heif_opener()
    return tuple(f for f in _FORMATS if f in Image.OPEN)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in _ORIENT else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a good picture
        return 1


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited on white."""
    if im.mode.startswith("I"):
        # 16/32-bit grey: map the value range onto 0..255 instead of clipping at 255,
        # which would turn most of a 16-bit picture white.
        arr = np.asarray(im, dtype=np.float64)
        lo = min(float(arr.min()), 0.0) if arr.size else 0.0
        hi = float(arr.max()) if arr.size else 0.0
        if lo < 0 or hi > 255:
            arr = (arr - lo) * (255.0 / (hi - lo))
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        finite = np.isfinite(arr)
        arr = np.where(finite, arr, 0.0)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        hi = float(arr[finite].max()) if finite.any() else 0.0
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if im.mode in ("P", "L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode in ("LA", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif im.mode == "La":
        im = im.convert("RGBa").convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def _open(source: Source, name: str) -> tuple[IO[bytes], int]:
    """A binary file object for `source`, and its size in bytes."""
    if isinstance(source, bytes):
        return io.BytesIO(source), len(source)
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever. It changes
        # nothing for regular files, and anything else is refused just below.
        fd = os.open(source, _OPEN_FLAGS)
    except FileNotFoundError as e:
        raise ImageError(name, "missing", "the file is gone") from e
    except NotADirectoryError as e:
        raise ImageError(name, "missing", "a parent is not a folder") from e
    except PermissionError as e:
        raise ImageError(name, "unreadable", "permission denied") from e
    except IsADirectoryError as e:
        raise ImageError(name, "not an image", "a directory") from e
    except OSError as e:
        raise ImageError(name, "unreadable", e.strerror or str(e)) from e
    except (ValueError, TypeError) as e:  # a NUL byte in the path, or not a path at all
        raise ImageError(name, "unreadable", f"bad path: {e}") from e
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise ImageError(name, "unreadable", e.strerror or str(e)) from e
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or a device (/dev/zero named x.jpg) would block or never end.
        os.close(fd)
        raise ImageError(name, "not an image", "not a regular file")
    return os.fdopen(fd, "rb"), st.st_size


def _open_header(
    f: IO[bytes], name: str, nbytes: int, max_pixels: int | None, *, draft: bool = False
) -> Image.Image:
    """PIL's view of the file with only its header read, after the checks every decoder
    shares: not empty, a format we let run, a sane size within the pixel budget.

    With `draft`, a JPEG's budget is left to the caller, who counts the pixels of the
    reduced scale it decodes at (`_check_budget` after `Image.draft`). `max_pixels=None`
    checks no size (a header read for EXIF, which decodes no pixel).
    """
    if nbytes == 0:
        raise ImageError(name, "empty", "zero bytes")
    try:
        im: Image.Image
        magic = f.read(3)
        f.seek(0)
        if magic == b"\xff\xd8\xff" and "JPEG" in image_formats():
            # A JPEG is opened by its own plugin, not Image.open, whose guard (it warns over
            # 89 megapixels and refuses 179) counts the full size; a 200-megapixel phone
            # photo decodes at 1/8 scale to 3 megapixels, and the budget below counts those.
            im = JpegImagePlugin.jpeg_factory(f)
        else:
            im = Image.open(f, formats=image_formats())
    except UnidentifiedImageError as e:
        raise ImageError(name, "not an image", "unknown format") from e
    except Image.DecompressionBombError as e:
        # PIL's own guard (twice its MAX_IMAGE_PIXELS) fires inside open().
        raise ImageError(name, "too many pixels", str(e)) from e
    except OSError as e:
        raise ImageError(name, "unreadable", e.strerror or str(e)) from e
    except Exception as e:  # noqa: BLE001 - PIL raises many types on bad headers
        raise ImageError(name, "not an image", f"{type(e).__name__}: {e}") from e

    # Only the header has been read so far: refuse bombs before a pixel is decoded.
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(name, "not an image", f"size {w}x{h}")
    if max_pixels is not None and not (draft and im.format in _DRAFTABLE):
        _check_budget(name, (w, h), (w, h), max_pixels)
    return im


def _check_budget(
    name: str, size: tuple[int, int], decoded: tuple[int, int], max_pixels: int
) -> None:
    """Refuse a picture whose decoded size is over `max_pixels`; the message gives the
    file's own size, and the scale when draft mode would have decoded fewer pixels."""
    if decoded[0] * decoded[1] <= max_pixels:
        return
    w, h = size
    scale = "" if decoded == size else f" even at 1/{max(1, round(w / decoded[0]))} scale"
    raise ImageError(
        name, "too many pixels", f"{w}x{h} is over the budget of {max_pixels:,} pixels{scale}"
    )


@contextlib.contextmanager
def open_header(source: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """PIL's view of an image file with only its header read (for its EXIF), by the same
    opener and formats as `decode_image`; no pixel is decoded, so no pixel budget applies.

    Raises:
        ImageError: as `decode_image` does for a file it cannot open.
    """
    name = _describe(source)
    f, nbytes = _open(source, name)
    with f:
        yield _open_header(f, name, nbytes, None)


def jpeg_for_gpu(
    source: Source, *, max_pixels: int = MAX_PIXELS
) -> tuple[bytes, int, int, int] | None:
    """A plain JPEG's bytes, upright size and EXIF orientation, for a GPU decoder; None
    when the file should go through `decode_image_info` instead (any other format, CMYK,
    multi-picture, a file whose data does not end where a JPEG must, or one over the pixel
    budget, which the CPU decodes at a reduced scale).

    Only the header is parsed (PIL reads EXIF there without decoding a pixel), and the
    same rules as `decode_image_info` refuse a file, with the same `ImageError`s.
    """
    name = _describe(source)
    f, nbytes = _open(source, name)
    with f:
        im = _open_header(f, name, nbytes, max_pixels, draft=True)
        if im.format != "JPEG" or im.mode not in ("RGB", "L"):
            return None
        if im.size[0] * im.size[1] > max_pixels:
            return None
        orientation = _orientation(im)
        try:
            f.seek(0)
            data = f.read()
        except OSError as e:
            raise ImageError(name, "unreadable", e.strerror or str(e)) from e
    # A truncated JPEG must fail as it does on the CPU, never decode to a half-grey
    # picture: without the end-of-image marker, the CPU decoder gets the file and says so.
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    w, h = im.size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return data, w, h, orientation


def decode_image_info(
    source: Source,
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    draft_size: int | None = 256,
    draft_longest: bool = False,
) -> DecodedImage:
    """Decode like `decode_image`, and also report the file's size and the decoded size.
    With `draft_longest`, `draft_size` bounds the longest side instead of both (a 4000x3000
    JPEG with 900: 1000x750 rather than 2000x1500, a quarter of the pixels)."""
    name = _describe(source)
    f, nbytes = _open(source, name)
    with f:
        im = _open_header(f, name, nbytes, max_pixels, draft=bool(draft_size))
        w, h = im.size
        fmt = im.format or "?"
        # Image.open leaves animations (GIF, APNG, WebP) and multi-page TIFF on their first
        # frame. Asking n_frames would walk every frame, so it is not asked.
        try:
            if draft_size and fmt in _DRAFTABLE:
                # libjpeg scales by 1/2, 1/4 or 1/8 while decoding, keeping both sides at
                # least `draft_size`, so the model sees the same detail for far less work.
                want = (draft_size, draft_size)
                if draft_longest:
                    scale = draft_size / max(w, h)
                    want = (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale)))
                im.draft("RGB", want)
                _check_budget(name, (w, h), im.size, max_pixels)
            im.load()
            orientation = _orientation(im)
            decoded = im.size
            im = _to_rgb(im)
            if orientation != 1:
                im = im.transpose(_ORIENT[orientation])
        except ImageError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageError(name, "too many pixels", str(e)) from e
        except (OSError, SyntaxError, EOFError, struct.error) as e:
            raise ImageError(name, "truncated or corrupt", str(e)) from e
        except ValueError as e:
            raise ImageError(name, "unsupported", str(e)) from e
        except MemoryError as e:
            raise ImageError(name, "too many pixels", "out of memory while decoding") from e
        except Exception as e:  # noqa: BLE001 - a decoder bug must not crash a whole ingest
            raise ImageError(name, "truncated or corrupt", f"{type(e).__name__}: {e}") from e

    if orientation in (5, 6, 7, 8):
        w, h = h, w
        decoded = (decoded[1], decoded[0])
    bounded = within(im, max_side)
    if bounded is im and isinstance(im, ImageFile.ImageFile):
        # Detach from the (now closed) file object.
        bounded = im.copy()
    # The orientation is applied: drop EXIF and the rest so nothing rotates it twice.
    bounded.info = {}
    return DecodedImage(image=bounded, width=w, height=h, format=fmt, decoded_size=decoded)


def within(im: Image.Image, max_side: int) -> Image.Image:
    """`im` itself when its longest side is at most `max_side`, else a copy scaled down to
    it (bilinear, with PIL's reducing gap: fast and smooth enough for a model's input)."""
    iw, ih = im.size
    if max(iw, ih) <= max_side:
        return im
    scale = max_side / max(iw, ih)
    size = (max(1, min(max_side, round(iw * scale))), max(1, min(max_side, round(ih * scale))))
    return im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def decode_image(
    source: Source,
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    draft_size: int | None = 256,
) -> Image.Image:
    """Decode a file path or bytes into an RGB image whose longest side is at most `max_side`.

    Applies EXIF orientation, converts every mode (palette, alpha, CMYK, 16-bit, grey) to
    RGB, takes the first frame of animations and multi-page files, refuses more than
    `max_pixels` pixels before decoding them, and lets JPEG decode at a reduced scale
    (draft mode) when the result only needs about `draft_size` pixels on its short side.
    `bytes` are image data (an upload), never a path.

    Raises:
        ImageError: with `reason` one of "missing", "unreadable", "empty", "not an image",
            "too many pixels", "truncated or corrupt", "unsupported".
    """
    return decode_image_info(
        source, max_pixels=max_pixels, max_side=max_side, draft_size=draft_size
    ).image


def to_array(im: Image.Image, spec: Preprocess) -> Float32Array:
    """Resize the short side to `spec.resize`, center-crop `spec.size`, normalise; CHW float32.

    The crop box is worked out on the source and resized in one step, which gives the same
    pixels as resize-then-crop but never builds the resized whole: a 1024x1 strip would
    otherwise become a 262144x256 intermediate.
    """
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    side = min(w, h) * spec.size / spec.resize  # the crop's side, in source pixels
    left, top = (w - side) / 2, (h - side) / 2
    im = im.resize(
        (spec.size, spec.size),
        Image.Resampling.BILINEAR,
        box=(left, top, left + side, top + side),
    )
    scale, shift = _normalisation(spec.mean, spec.std)
    # (x / 255 - mean) / std as one multiply and one add, written straight into CHW order:
    # a third of the time of the plain expression, and this runs for every image.
    hwc = np.asarray(im)
    out: Float32Array = np.empty((3, *hwc.shape[:2]), np.float32)
    np.multiply(hwc.transpose(2, 0, 1), scale, out=out)
    out += shift
    return out


@functools.lru_cache(maxsize=16)
def _normalisation(
    mean: tuple[float, float, float], std: tuple[float, float, float]
) -> tuple[Float32Array, Float32Array]:
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    scale = (1.0 / (255.0 * s)).astype(np.float32)[:, None, None]
    shift = (-m / s).astype(np.float32)[:, None, None]
    scale.flags.writeable = shift.flags.writeable = False
    return scale, shift


def load_array(source: Source, spec: Preprocess, *, max_pixels: int = MAX_PIXELS) -> Float32Array:
    """Decode and preprocess in one call: what loader threads run."""
    return to_array(decode_image(source, max_pixels=max_pixels, draft_size=spec.resize), spec)
