"""A small, deterministic corpus of good, odd and bad image files, for tests of every floor.

`build_corpus(root)` writes it (in well under a second) and returns the good files and the
bad files with the `ImageError.reason` each must give. The ingest-level cases that depend
on the file system rather than on the bytes (permission, symlink loop, a file deleted after
the scan) have helpers of their own below.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Colours that survive JPEG compression well enough to be checked by their dominant channel.
RED = (230, 20, 20)
GREEN = (20, 200, 40)
BLUE = (20, 40, 220)

#: The pixel size a bomb file declares; its pixels are never written.
BOMB_SIDE = 40_000
#: What `make_symlink_loop` and `make_vanished` paths give on decoding.
SYMLINK_LOOP_REASON = "unreadable"
VANISHED_REASON = "missing"
UNREADABLE_REASON = "unreadable"
#: Why a permission test cannot run: root reads every file whatever its mode.
ROOT_SKIP_REASON = "running as root: file permissions are not enforced, so nothing is unreadable"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid PNG header declaring `width` x `height` RGB pixels, with one tiny IDAT.

    The IHDR's CRC is correct, so a decoder believes it and would allocate the whole
    picture; only a check of the declared size before decoding stops it.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\x00" * (1 + 3 * 16))  # the start of one scanline
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _blocks(width: int, height: int) -> Image.Image:
    """Four quadrants: red top-left, green top-right, blue bottom-left, white bottom-right."""
    arr = np.full((height, width, 3), 255, dtype=np.uint8)
    hw, hh = width // 2, height // 2
    arr[:hh, :hw] = RED
    arr[:hh, hw:] = GREEN
    arr[hh:, :hw] = BLUE
    return Image.fromarray(arr)


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Smooth noise compresses like a photo, so truncating it cuts real entropy-coded data.
    small = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _good_files(root: Path) -> list[Path]:
    made: dict[str, bytes] = {}

    made["photo.jpg"] = _encode(_noise(96, 64, 1), "JPEG", quality=90)
    made["blocks.png"] = _encode(_blocks(64, 48), "PNG")
    made["one_pixel.png"] = _encode(Image.new("RGB", (1, 1), GREEN), "PNG")
    strip = np.zeros((10, 20_000, 3), dtype=np.uint8)
    strip[:, :, 0] = (np.arange(20_000) % 256).astype(np.uint8)
    made["strip_20000x10.png"] = _encode(Image.fromarray(strip), "PNG")
    made["cmyk.jpg"] = _encode(Image.new("CMYK", (32, 24), (255, 0, 0, 0)), "JPEG", quality=95)

    # 16-bit grey ramp over the whole 0..65535 range, left (dark) to right (bright).
    ramp16 = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    made["gray16.png"] = _encode(Image.fromarray(ramp16), "PNG")

    # Palette picture: left half opaque blue, right half fully transparent (index 1).
    pal = Image.new("P", (32, 16), 0)
    pal.putpalette([*BLUE, 0, 0, 0] + [0] * (3 * 254))
    pal.paste(1, (16, 0, 32, 16))
    made["palette_transparent.png"] = _encode(pal, "PNG", transparency=1)

    # Grey + alpha: dark grey, top half opaque, bottom half transparent.
    la = Image.new("LA", (20, 20), (40, 255))
    la.paste((40, 0), (0, 10, 20, 20))
    made["gray_alpha.png"] = _encode(la, "PNG")

    made["rgba.png"] = _encode(Image.new("RGBA", (8, 8), (*RED, 128)), "PNG")
    made["bilevel.png"] = _encode(Image.new("1", (16, 16), 1), "PNG")
    made["gray.jpg"] = _encode(Image.new("L", (24, 24), 128), "JPEG")
    made["float.tif"] = _encode(
        Image.fromarray(np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(8, 8)),
        "TIFF",
    )

    # Animated GIF: red, then green, then blue. The first frame is the picture.
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, GREEN, BLUE)]
    made["animated.gif"] = _encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0
    )
    # Multi-page TIFF: a green 40x30 page first, then a blue 20x20 page.
    pages = [Image.new("RGB", (40, 30), GREEN), Image.new("RGB", (20, 20), BLUE)]
    made["multipage.tif"] = _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])

    # Stored 64 wide x 32 high, red top-left; EXIF orientation 6 means "rotate 90 degrees
    # clockwise to view", so upright it is 32 x 64 with red at the top-right.
    exif = Image.Exif()
    exif[0x0112] = 6
    made["rotated_exif6.jpg"] = _encode(_blocks(64, 32), "JPEG", quality=95, exif=exif.tobytes())

    made["png_named.jpg"] = _encode(_blocks(16, 16), "PNG")
    made["with space.png"] = _encode(_blocks(12, 12), "PNG")
    made["ünïcødé 猫.png"] = _encode(_blocks(12, 12), "PNG")
    made["new\nline.png"] = _encode(_blocks(12, 12), "PNG")

    paths = []
    for name, data in made.items():
        path = root / "good" / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def _bad_files(root: Path) -> dict[Path, str]:
    jpeg = _encode(_noise(128, 96, 2), "JPEG", quality=90)
    png = _encode(_noise(128, 96, 3), "PNG")
    made: dict[str, tuple[bytes, str]] = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "truncated.png": (png[: len(png) // 2], "truncated or corrupt"),
        "text.jpg": (b"this is not a picture, only some words\n" * 4, "not an image"),
        "page.png": (
            b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
            b"<body><h1>Not Found</h1></body></html>\n",
            "not an image",
        ),
        "bomb_40000x40000.png": (png_bomb(), "too many pixels"),
    }
    out = {}
    for name, (data, reason) in made.items():
        path = root / "bad" / name
        path.write_bytes(data)
        out[path] = reason
    folder = root / "bad" / "folder.jpg"
    folder.mkdir()
    out[folder] = "not an image"
    return out


def build_corpus(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """Write the corpus under `root` (in `good/` and `bad/`).

    Returns the good files, and {bad file: the `ImageError.reason` it must give}.
    Same bytes on every call.
    """
    (root / "good").mkdir(parents=True, exist_ok=True)
    (root / "bad").mkdir(parents=True, exist_ok=True)
    return _good_files(root), _bad_files(root)


def make_symlink_loop(root: Path) -> Path:
    """`loop_a.jpg` -> `loop_b.jpg` -> `loop_a.jpg`; opening it fails with ELOOP."""
    a, b = root / "loop_a.jpg", root / "loop_b.jpg"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return a


def make_unreadable(path: Path) -> Path:
    """Take away every permission on `path`. Root still reads it: see `ROOT_SKIP_REASON`."""
    path.chmod(0)
    return path


def permissions_enforced() -> bool:
    """False when running as root, where `make_unreadable` has no effect."""
    return not hasattr(os, "geteuid") or os.geteuid() != 0


def make_vanished(root: Path, name: str = "vanished.png") -> Path:
    """A path that was a good image when a scan saw it and is gone by load time."""
    path = root / name
    path.write_bytes(_encode(_blocks(8, 8), "PNG"))
    path.unlink()
    return path


KINDS = (("noise", "jpg"), ("document", "png"), ("screenshot", "png"))


def unreadable_pictures(folder: Path, n: int = 3) -> list[Path]:
    """What real libraries hold beside photos and ImageNet's classifier cannot read: `n`
    each of noise (a sensor's dark frame), pages of text and screenshots."""
    from PIL import ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"noise{i}.jpg")
        page = Image.new("RGB", (800, 1000), "white")
        draw = ImageDraw.Draw(page)
        for y in range(40, 960, 24):
            draw.text((40, y), f"Lorem ipsum dolor sit amet, consectetur {y + i}", fill="black")
        page.save(folder / f"document{i}.png")
        shot = Image.new("RGB", (1280, 800), (240, 240, 245))
        draw = ImageDraw.Draw(shot)
        draw.rectangle((0, 0, 1280, 40), fill=(60, 60, 70))
        for y in range(80, 760, 30):
            draw.text((30, y), f"Menu item {y + i}", fill="black")
            draw.rectangle((320, y, 1260, y + 22), outline=(200, 200, 210))
        shot.save(folder / f"screenshot{i}.png")
        out += [
            folder / f"noise{i}.jpg",
            folder / f"document{i}.png",
            folder / f"screenshot{i}.png",
        ]
    return out
