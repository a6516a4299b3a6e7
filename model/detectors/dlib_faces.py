"""Faces with dlib: found, aligned on five landmarks, and described by 128 numbers.

dlib (the `dlib-bin` wheel) and its model files (the `face_recognition_models` package, pure
data) are used directly, not through the `face_recognition` package:

- detection: dlib's HOG frontal-face detector by default (CPU), or its CNN detector
  (`mmod_human_face_detector.dat`) with `detector="cnn"`, run on a reduced copy of the
  photo whose longest side is at most `DETECT_SIDE`. HOG's window is 80 px, so a face
  narrower than about 8 % of that copy's longest side is not found; a photo already smaller
  than `UPSAMPLE_BELOW` is upsampled once instead, so a small picture's face is still found.
- alignment and descriptor: the 5-point landmark model, dlib's 150 px face chip, then dlib's
  ResNet descriptor (128 floats) run by torch on the same weights (face_net.py: 25-35 ms a
  face on one core against dlib-bin's 150-185 ms, which has no BLAS; dlib's own where torch
  is absent). Two descriptors of one person lie about 0.2-0.45 apart (Euclidean), of two
  people 0.65-0.9 (docs/people.md).
- JPEGs decode at a reduced scale (PIL's draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while
  decoding), just large enough for the detection copy: a 12-megapixel photo decodes at
  1000x750 (about 20 ms). A face narrower than `DETAIL` there is described from a larger
  copy (longest side at most `ALIGN_SIDE`), decoded again for it, so a small face is still
  aligned on its own detail.

Everything is loaded lazily, once per thread (dlib's objects are not shared between threads).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.data.images import decode_image_info
from model.detectors import face_net

Descriptor = npt.NDArray[np.float32]
Detector = Literal["hog", "cnn"]

DETECT_SIDE = 1024  # the detection copy's longest side (HOG at 1,024 px: 50-100 ms, one core)
ALIGN_SIDE = 2048  # the copy the landmarks and descriptor read, at most this long a side
# a photo smaller than this (longest side) is upsampled once to detect: not scikit-image's
# 512 px astronaut, where one upsampling adds a weak detection (0.12) on her suit
UPSAMPLE_BELOW = 512
MIN_FACE = 20  # a face narrower than this in the align copy is too small to describe
# a HOG detection scoring below this is not a face: the astronaut saved as a JPEG (quality
# 92) gave her face at 1.50 and one on her suit at 0.00 (dlib's own threshold is 0); the six
# real test faces scored 1.09-2.08, the suit's 0.00-0.12 (with one upsampling, on the PNG)
HOG_MIN_SCORE = 0.2
CROP_MARGIN = 0.6  # the crop around a face, as a fraction of its width on each side
# a face wider than this is scaled down to it before its landmarks and descriptor: dlib's
# descriptor reads a 150 px chip of the face and its surround (about 100 px of face), so
# more detail is thrown away anyway; a 580 px face took 0.31 s, scaled to 150 px 0.12 s
DESCRIBE_FACE = 150
# a face narrower than this in the decoded copy is described from a larger copy, decoded again
# for it: dlib's chip holds about 100 px of face, so a wider face loses nothing
DETAIL = 100
DESCRIPTOR_DIM = 128
#: the version of this module's faces (detector, sizes, descriptor): faces made by another
#: are found again at the next ingest
FACES_VERSION = 1

_MODELS = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn": "mmod_human_face_detector.dat",
}


class FacesUnavailable(RuntimeError):
    """dlib or its model files are not installed."""


@dataclass(frozen=True)
class FoundFace:
    """One face: its box in the photo's own upright pixels (left, top, right, bottom), the
    detector's score, its width in those pixels, and its descriptor."""

    box: tuple[int, int, int, int]
    score: float
    size: int
    descriptor: Descriptor


@dataclass(frozen=True)
class PhotoFaces:
    """What a photo gave: its faces, its own upright size, and the decoded copy's size."""

    faces: list[FoundFace]
    width: int
    height: int
    decoded: tuple[int, int]


def models_dir() -> Path:
    """Where `face_recognition_models` keeps its files (found without importing it: its
    __init__ needs pkg_resources, which new setuptools lack)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacesUnavailable(
            "the face models are not installed: pip install face_recognition_models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def available() -> str | None:
    """None when dlib and its models can run, else why not (for a note, not an error)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return "dlib is not installed (pip install dlib-bin)"
    try:
        folder = models_dir()
    except FacesUnavailable as e:
        return str(e)
    missing = [f for f in _MODELS.values() if not (folder / f).is_file()]
    return f"face model files missing in {folder}: {', '.join(missing)}" if missing else None


def reduced(image: Image.Image, side: int) -> tuple[Image.Image, float]:
    """`image` with its longest side at most `side`, and the factor back to `image`'s pixels.
    By a whole factor first (PIL's reduce: box averages, a fifth of a bilinear resize's
    time on 2,000 px), then bilinear for what is left."""
    w, h = image.size
    if max(w, h) <= side:
        return image, 1.0
    # a whole factor that leaves at least 0.9 x `side` (a 2,000 px copy: 1,000 px by a box
    # reduce, 3 ms, rather than 1,024 by bilinear, 39 ms)
    whole = int(max(w, h) // (side * 0.9))
    small = image.reduce(whole) if whole >= 2 else image
    if max(small.size) > side:
        scale = side / max(small.size)
        small = small.resize(
            (max(1, round(small.size[0] * scale)), max(1, round(small.size[1] * scale))),
            Image.Resampling.BILINEAR,
        )
    return small, w / small.size[0]


class FaceFinder:
    """Finds and describes faces (see the module doc); one dlib model set per thread."""

    def __init__(self, detector: Detector = "hog", *, detect_side: int = DETECT_SIDE) -> None:
        if detector not in ("hog", "cnn"):
            raise ValueError(f"unknown face detector {detector!r}: hog or cnn")
        self.detector = detector
        self.detect_side = detect_side
        self._local = threading.local()

    def _models(self) -> dict[str, Any]:
        models: dict[str, Any] | None = getattr(self._local, "models", None)
        if models is None:
            why = available()
            if why is not None:
                raise FacesUnavailable(why)
            import dlib

            folder = models_dir()
            net = _torch_net(folder / _MODELS["descriptor"])
            models = {
                "net": net,
                "landmarks": dlib.shape_predictor(str(folder / _MODELS["landmarks"])),
                # dlib's own network only where torch's copy is absent (0.1 s a thread)
                "descriptor": dlib_descriptor() if net is None else None,
                "detect": (
                    dlib.cnn_face_detection_model_v1(str(folder / _MODELS["cnn"]))
                    if self.detector == "cnn"
                    else dlib.get_frontal_face_detector()
                ),
            }
            self._local.models = models
        return models

    def _detect(self, rgb: npt.NDArray[np.uint8], upsample: int) -> list[tuple[Any, float]]:
        """(dlib rectangle, score) of each face in `rgb`."""
        detect = self._models()["detect"]
        if self.detector == "cnn":
            return [(d.rect, float(d.confidence)) for d in detect(rgb, upsample)]
        rects, scores, _ = detect.run(rgb, upsample, HOG_MIN_SCORE)
        return list(zip(rects, (float(s) for s in scores), strict=True))

    def _describe(self, chips: list[npt.NDArray[np.uint8]]) -> list[Descriptor]:
        """The descriptors of face chips: by torch where it is installed (face_net.py, the
        same numbers five times faster), else by dlib."""
        models = self._models()
        if not chips:
            return []
        if models["net"] is not None:
            return list(face_net.describe(models["net"], chips))
        return [
            np.asarray(models["descriptor"].compute_face_descriptor(c), np.float32) for c in chips
        ]

    def find_in_file(self, path: str | Path) -> PhotoFaces:
        """The faces of an image file; ImageError (model.data.images) when it cannot be read.
        A JPEG decodes at the smallest scale that gives the detection copy (draft mode); a
        face found narrower than DETAIL there is described from a larger copy, decoded
        again only then."""
        info = decode_image_info(
            str(path), max_side=max(ALIGN_SIDE, self.detect_side),
            draft_size=int(self.detect_side * 0.9), draft_longest=True,
        )  # fmt: skip

        def larger() -> Image.Image:
            return decode_image_info(
                str(path), max_side=ALIGN_SIDE, draft_size=int(ALIGN_SIDE * 0.9),
                draft_longest=True,
            ).image  # fmt: skip

        faces = self.find(info.image, (info.width, info.height), larger=larger)
        return PhotoFaces(faces, info.width, info.height, info.image.size)

    def find(
        self,
        image: Image.Image,
        size: tuple[int, int] | None = None,
        *,
        larger: Callable[[], Image.Image] | None = None,
    ) -> list[FoundFace]:
        """The faces of a picture (any mode, any size), boxes in the pixels of `size` (the
        photo's own size, when `image` is a reduced copy of it; default `image.size`).
        `larger`, when given, returns a larger copy of the photo for faces small in this
        one."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        size = size or image.size
        align, _ = reduced(image, max(ALIGN_SIDE, self.detect_side))
        small, factor = reduced(align, self.detect_side)
        upsample = 1 if max(align.size) < UPSAMPLE_BELOW else 0
        # HOG reads gradients: on grey it finds the same faces in about 0.68x the time of
        # RGB (13 photos at 1,024 px: 65-77 against 96-111 ms, scores a little lower);
        # the CNN detector reads colour
        pixels = np.asarray(small if self.detector == "cnn" else small.convert("L"))
        found = []  # (box in `align` pixels, score)
        for rect, score in self._detect(pixels, upsample):
            box = tuple(v * factor for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            if box[2] - box[0] >= MIN_FACE:
                found.append((box, score))
        narrow = any(b[2] - b[0] < DETAIL for b, _ in found)
        if narrow and larger is not None and max(align.size) < min(ALIGN_SIDE, max(size)):
            bigger, _ = reduced(larger().convert("RGB"), ALIGN_SIDE)
            k = bigger.size[0] / align.size[0]
            found = [(tuple(v * k for v in b), s) for b, s in found]
            align = bigger
        return self._described(align, found, size)

    def _described(
        self,
        align: Image.Image,
        found: list[tuple[tuple[float, ...], float]],
        size: tuple[int, int],
    ) -> list[FoundFace]:
        """Each face of `found` (boxes in `align`'s pixels) aligned, described, and boxed in
        the photo's pixels (`size`)."""
        import dlib

        to_photo = size[0] / align.size[0]
        chips = []
        for (left, top, right, bottom), _ in found:
            crop, origin, scale = _crop(align, (left, top, right, bottom))
            box = dlib.rectangle(
                round((left - origin[0]) * scale), round((top - origin[1]) * scale),
                round((right - origin[0]) * scale), round((bottom - origin[1]) * scale),
            )  # fmt: skip
            shape = self._models()["landmarks"](crop, box)
            chips.append(dlib.get_face_chip(crop, shape, face_net.CHIP, face_net.CHIP_PADDING))
        out = []
        pw, ph = size
        for ((left, top, right, bottom), score), vec in zip(
            found, self._describe(chips), strict=True
        ):
            # a face cut by the picture's edge gets a box within it
            photo_box = (
                min(pw - 1, max(0, round(left * to_photo))),
                min(ph - 1, max(0, round(top * to_photo))),
                min(pw, max(1, round(right * to_photo))),
                min(ph, max(1, round(bottom * to_photo))),
            )
            out.append(FoundFace(photo_box, score, int(round((right - left) * to_photo)), vec))
        return out


def _crop(
    image: Image.Image, box: tuple[float, float, float, float]
) -> tuple[npt.NDArray[np.uint8], tuple[int, int], float]:
    """The pixels around `box` (CROP_MARGIN of its width on each side), clipped to the
    picture and scaled so the face is at most DESCRIBE_FACE wide; the crop's top-left corner
    in `image` and the scale."""
    left, top, right, bottom = box
    margin = (right - left) * CROP_MARGIN
    x0, y0 = max(0, int(left - margin)), max(0, int(top - margin))
    x1 = min(image.size[0], int(right + margin) + 1)
    y1 = min(image.size[1], int(bottom + margin) + 1)
    crop = image.crop((x0, y0, x1, y1))
    scale = min(1.0, DESCRIBE_FACE / max(1.0, right - left))
    if scale < 1.0:
        size = (max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale)))
        crop = crop.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(crop)), (x0, y0), scale


def dlib_descriptor() -> Any:
    """dlib's own descriptor network (`compute_face_descriptor`), as dlib runs it."""
    import dlib

    return dlib.face_recognition_model_v1(str(models_dir() / _MODELS["descriptor"]))


def _torch_net(path: Path) -> Any:
    """dlib's descriptor network in torch (face_net.py), or None without torch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return face_net.build(path)


def distance(a: Descriptor, b: Descriptor) -> float:
    """Euclidean distance between two descriptors: dlib's measure (one person: under 0.6)."""
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
