"""Is there a person in the photo? A frontal-face detector that ships offline.

ImageNet-1k has no class for a person (its few people are a scuba diver, a groom and a
ballplayer), so ConSE alone never tags a portrait `person`. scikit-image ships a trained
LBP frontal-face cascade (`skimage.data.lbp_frontal_face_cascade_filename()`, run by
`skimage.feature.Cascade`): when it finds a face of a reasonable size, the photo gets the
concept `person` (WordNet's n00007846), shown with kind `detected`.

- It runs on a small grey copy of the picture: its longest side at most `SIDE` pixels. A
  face must be at least `MIN_FACE` of the short side (24 px, the cascade's window, at 160
  px), so crowds and faces in the background are not looked for: a photo *of* a person is.
- Its score is a fixed `PERSON_SCORE`, not a calibrated probability: the cascade gives no
  confidence. 0.8 ranks `person` with a confident class (a face is rarely anything else:
  no false positive on the 20 photos without a person, 2 on 1,000 Fashion-MNIST images
  enlarged to 160 px and none at their own 28 px, which is below the window;
  `bench/bench_faces.py`) but below a sure one (espresso 0.96), so a face that is a detail
  does not push the photo's subject out of its tags.
- It finds frontal faces only: a face in profile (scikit-image's cameraman, behind his
  camera) or a person seen from behind (darknet's person.jpg) is not found.
- About 8 ms per photo on a 2-core AMD EPYC, against about 24 ms for EfficientNet-Lite0 and
  its classifier on the same machine; it runs in the loader threads at ingest, beside the
  decode (`bench/bench_faces.py` measures both).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from model.vocab.rules import PERSON

SIDE = 160  # the grey copy's longest side, in pixels
MIN_FACE = 0.15  # the smallest face, as a fraction of the grey copy's short side
MAX_FACE = 0.8  # ... and the largest
WINDOW = 24  # the cascade's own window: no face smaller than this can be found
SCALE = 1.25  # between the window sizes tried
STEP = 1.5  # the window's stride, in units of its scale
NEIGHBOURS = 4  # overlapping detections needed: fewer let textures through
PERSON_SCORE = 0.8


@dataclass(frozen=True)
class Face:
    """A face's box in the grey copy's pixels, and the copy's size."""

    row: int
    col: int
    width: int
    height: int
    image_size: tuple[int, int]  # (width, height) of the grey copy


def grey_copy(image: Image.Image, side: int = SIDE) -> Image.Image:
    """The picture in grey, its longest side at most `side` (never enlarged)."""
    grey = image.convert("L")
    if max(grey.size) > side:
        grey.thumbnail((side, side), Image.Resampling.BILINEAR)
    return grey


class FaceDetector:
    """scikit-image's LBP frontal-face cascade, one per thread (built lazily)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _cascade(self) -> Any:
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            from skimage.data import lbp_frontal_face_cascade_filename
            from skimage.feature import Cascade

            cascade = Cascade(lbp_frontal_face_cascade_filename())
            self._local.cascade = cascade
        return cascade

    def faces(self, image: Image.Image) -> list[Face]:
        """The frontal faces of a reasonable size in a picture (any size, any mode)."""
        grey = grey_copy(image)
        short = min(grey.size)
        smallest = max(WINDOW, int(short * MIN_FACE))
        largest = int(short * MAX_FACE)
        if largest < smallest:
            return []
        pixels = np.asarray(grey, dtype=np.float32) / 255.0
        found = self._cascade().detect_multi_scale(
            img=pixels,
            scale_factor=SCALE,
            step_ratio=STEP,
            min_size=(smallest, smallest),
            max_size=(largest, largest),
            min_neighbor_number=NEIGHBOURS,
        )
        return [
            Face(int(f["r"]), int(f["c"]), int(f["width"]), int(f["height"]), grey.size)
            for f in found
        ]

    def concepts(self, image: Image.Image) -> dict[str, float]:
        """The concepts the picture's faces show, by key: {PERSON: PERSON_SCORE} or {}."""
        return {PERSON: PERSON_SCORE} if self.faces(image) else {}
