"""What the fast path (`model.fastpath`) and int8 quantisation (`model.quantize`) share: the
one OpenVINO Core both compile with, and the cosine both measure agreement with fp32 by.

Its own module so that the imports point one way: fastpath uses quantize, and both use this.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """The process's one OpenVINO Core (made on first use: importing this needs no OpenVINO)."""
    import openvino as ov

    return ov.Core()


def cosines(a: Float32Array, b: Float32Array) -> Float32Array:
    """Each row's cosine between `a` and `b`, (N, D) each (0 where either row is zero)."""
    na = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    out: Float32Array = (a * b).sum(axis=1) / np.maximum(na, 1e-12)
    return out
