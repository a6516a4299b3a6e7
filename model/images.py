"""Decode any image file into a bounded RGB picture, and turn it into a model input.

`decode_image` is the one pure function every face uses (ingest, search by image, tag,
training). It never raises anything but `ImageError`, whose message names the file and
the reason, so callers can log `skipping PATH: reason` and go on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Never let PIL decode a truncated file into a half-grey picture: that would be indexed
# as if it were good.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Default pixel budget: 64 megapixels is a large camera photo; 40000x40000 bombs are refused.
MAX_PIXELS = 64_000_000
#: Decoded images are bounded to this longest side before anything else sees them.
MAX_SIDE = 1024
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

Float32Array = npt.NDArray[np.float32]


class ImageError(ValueError):
    """An image that cannot be used. `reason` is a short key used to count failures."""

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        self.source = source
        self.reason = reason
        self.detail = detail
        super().__init__(f"{source}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its input: resize the short side, center crop, normalise."""

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _describe(source: str | os.PathLike[str] | bytes) -> str:
    if isinstance(source, bytes):
        return "<upload>"
    return str(source)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(np.nan_to_num(arr).astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "PA", "La"):
        im = im.convert("RGBA")
    if im.mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def decode_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
    draft_size: int | None = 256,
) -> Image.Image:
    """Decode a file path or bytes into an RGB image whose longest side is at most `max_side`.

    Applies EXIF orientation, converts every mode (palette, alpha, CMYK, 16-bit, grey) to
    RGB, takes the first frame of animations, refuses more than `max_pixels` pixels before
    decoding them, and lets JPEG decode at a reduced scale (draft mode) when the result
    only needs to be about `draft_size` pixels on its short side.

    Raises:
        ImageError: with `reason` one of "unreadable", "empty", "not an image",
            "too many pixels", "truncated or corrupt".
    """
    name = _describe(source)
    try:
        if isinstance(source, bytes):
            data = source
        else:
            with open(source, "rb") as f:
                data = f.read()
    except FileNotFoundError as e:
        raise ImageError(name, "missing", "the file is gone") from e
    except PermissionError as e:
        raise ImageError(name, "unreadable", "permission denied") from e
    except IsADirectoryError as e:
        raise ImageError(name, "not an image", "a directory") from e
    except OSError as e:
        raise ImageError(name, "unreadable", e.strerror or str(e)) from e
    if not data:
        raise ImageError(name, "empty", "zero bytes")

    with warnings.catch_warnings():
        # PIL warns (and past 2x raises) on its own bomb limit; we check ours first.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as e:
            raise ImageError(name, "not an image", "unknown format") from e
        except Image.DecompressionBombError as e:
            raise ImageError(name, "too many pixels", str(e)) from e
        except Exception as e:  # noqa: BLE001 - PIL raises many types on bad headers
            raise ImageError(name, "not an image", f"{type(e).__name__}: {e}") from e

        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageError(name, "not an image", f"size {w}x{h}")
        if w * h > max_pixels:
            raise ImageError(
                name, "too many pixels", f"{w}x{h} is over the budget of {max_pixels:,} pixels"
            )
        try:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            if im.format == "JPEG" and draft_size:
                # Let libjpeg scale by 1/2, 1/4, 1/8 while decoding; it keeps at least
                # the requested size, so quality for the model is unchanged.
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            im = ImageOps.exif_transpose(im) or im
            im = _to_rgb(im)
        except Image.DecompressionBombError as e:
            raise ImageError(name, "too many pixels", str(e)) from e
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(name, "truncated or corrupt", str(e)) from e
        except Exception as e:  # noqa: BLE001 - a decoder bug must not crash a whole ingest
            raise ImageError(name, "truncated or corrupt", f"{type(e).__name__}: {e}") from e

    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im


def to_array(im: Image.Image, spec: Preprocess) -> Float32Array:
    """Resize the short side to `spec.resize`, center-crop `spec.size`, normalise; CHW float32."""
    w, h = im.size
    scale = spec.resize / min(w, h)
    nw, nh = max(spec.size, round(w * scale)), max(spec.size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (nw - spec.size) // 2, (nh - spec.size) // 2
    im = im.crop((left, top, left + spec.size, top + spec.size))
    arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_array(
    source: str | os.PathLike[str] | bytes, spec: Preprocess, *, max_pixels: int = MAX_PIXELS
) -> Float32Array:
    """Decode and preprocess in one call: what loader threads run."""
    return to_array(decode_image(source, max_pixels=max_pixels, draft_size=spec.resize), spec)
