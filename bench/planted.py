"""Planted near-duplicates: real photos, each with a few edited copies, among distinct photos.

`plant(out, fashion)` writes a folder a person could have: originals (scikit-image's photos,
Debian darknet's where installed, scikit-image's LFW faces, Fashion-MNIST test images) and,
for some of them, the copies a photo library gathers:
- `resized`: half the size (double for thumbnails under 128 px), Lanczos, PNG;
- `jpeg`: recompressed as JPEG at quality 50;
- `crop`: 6% cut from the left and top edges, PNG;
- `small-jpeg`: three quarters of the size and JPEG at quality 75.

Folders: `real/` (the camera photos), `face/` and `fashion/`. It returns {absolute path:
source name}: two files are true near-duplicates exactly when they share a source. The faces
and the Fashion-MNIST images are the hard part: within a class they look alike, but no two
are the same photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DARKNET = Path("/usr/share/darknet/data")
COPY_KINDS = ("resized", "jpeg", "crop", "small-jpeg")


def _copies(im: Image.Image) -> dict[str, tuple[Image.Image, str]]:
    w, h = im.size
    scale = 0.5 if min(w, h) >= 128 else 2.0
    resized = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    cut_w, cut_h = max(1, round(w * 0.06)), max(1, round(h * 0.06))
    crop = im.crop((cut_w, cut_h, w, h))
    small = im.resize((max(1, round(w * 0.75)), max(1, round(h * 0.75))), Image.LANCZOS)
    return {
        "resized": (resized, "png"),
        "jpeg": (im, "jpg"),
        "crop": (crop, "png"),
        "small-jpeg": (small, "jpg"),
    }


def _save(im: Image.Image, path: Path) -> None:
    rgb = im.convert("RGB") if im.mode not in ("RGB", "L") else im
    if path.suffix == ".jpg":
        quality = 50 if path.stem.endswith("_jpeg") else 75
        rgb.save(path, format="JPEG", quality=quality)
    else:
        rgb.save(path, format="PNG")


def originals(fashion: Path | None, faces: int = 100) -> dict[str, Image.Image]:
    """Every distinct photo, by a unique source name."""
    from model.data.datasets import PHOTO_LABELS, _photo_array

    out: dict[str, Image.Image] = {}
    for name in PHOTO_LABELS:
        out[f"photo-{name}"] = Image.fromarray(_photo_array(name))
    for path in sorted(DARKNET.glob("*.jpg")):
        with Image.open(path) as im:
            out[f"darknet-{path.stem}"] = im.convert("RGB")
    if faces:
        import skimage.data

        # the first 100 of lfw_subset are faces, the other 100 are not
        for i, arr in enumerate(skimage.data.lfw_subset()[:faces]):
            out[f"face-{i:03d}"] = Image.fromarray((arr * 255).round().astype(np.uint8))
    if fashion is not None:
        for path in sorted(fashion.rglob("*.png")):
            with Image.open(path) as im:
                out[f"fashion-{path.parent.name}-{path.stem}"] = im.copy()
    return out


def plant(out: Path, fashion: Path | None, *, every: int = 5, faces: int = 100) -> dict[str, str]:
    """Write originals and planted copies under `out`; returns {path: source name}.

    Every photo gets copies; of the faces and Fashion-MNIST images, every `every`-th one
    does (the rest stay alone, as distinct look-alikes)."""
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, str] = {}
    small_sources = 0
    for name, im in originals(fashion, faces).items():
        # scikit-image's and darknet's photos share one folder: both are camera photos
        kind = name.split("-", 1)[0]
        folder = out / ("real" if kind in ("photo", "darknet") else kind)
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.png"
        _save(im, path)
        truth[str(path.resolve())] = name
        if name.startswith(("face-", "fashion-")):
            small_sources += 1
            if (small_sources - 1) % every:
                continue
        for kind, (copy, ext) in _copies(im).items():
            cpath = folder / f"{name}_{kind}.{ext}"
            _save(copy, cpath)
            truth[str(cpath.resolve())] = name
    return truth
