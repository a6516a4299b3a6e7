"""A deterministic fake embedder for ingest and service tests (no torch, no weights)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.data.images import Preprocess, to_array

DIM = 8


class FakeEmbedder:
    """Colour statistics as an 8-d unit vector; counts how many images it embedded."""

    def __init__(self, name: str = "devise", content_id: str = "fake-1", delay: float = 0.0):
        self.name = name
        self._id = content_id
        self.calls = 0
        self.delay = delay

    @property
    def dim(self) -> int:
        return DIM

    @property
    def content_id(self) -> str:
        return self._id

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(32, 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def embed_arrays(self, arrays: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.delay:
            import time

            time.sleep(self.delay)
        self.calls += len(arrays)
        mean = arrays.mean(axis=(2, 3))
        std = arrays.std(axis=(2, 3))
        v = np.concatenate(
            [mean, std, mean[:, :1] - mean[:, 2:3], np.ones((len(arrays), 1))], axis=1
        ).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_images(self, images: Sequence[Image.Image]) -> npt.NDArray[np.float32]:
        return self.embed_arrays(np.stack([to_array(im, self.preprocess) for im in images]))
