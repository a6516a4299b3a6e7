"""dlib's face descriptor (its ResNet, `dlib_face_recognition_resnet_model_v1.dat`) run by
torch: the same weights and the same 128 numbers, several times faster on a CPU.

The `dlib-bin` wheel is built without BLAS, so its convolutions are dlib's own loops: 150 ms a
face on one Zen 3 core, most of a 12-megapixel photo's face stage. Torch runs the same
network in about a tenth of that. The weights are read straight from dlib's file (its
serialization: packed integers, and tensors as little-endian float32 after a version and
four dimensions); the layers are those of dlib's `dnn_face_recognition_ex.cpp`, checked
against dlib's own descriptor to 1e-4 (tests/test_people_speed.py).

The input is dlib's face chip (`dlib.get_face_chip(image, shape, 150, 0.25)`, what
`compute_face_descriptor` extracts itself), so alignment stays dlib's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CHIP = 150  # the chip's side, and the network's input
CHIP_PADDING = 0.25  # dlib's default padding around the face in the chip
# dlib's input_rgb_image_sized: the mean of each channel, then / 256
_MEAN = np.array([122.782, 117.001, 104.298], np.float32)
# (filters, stride of its first convolution) of each residual block, in the order they run:
# level 4 (3 x 32), level 3 (64, down first), 2 (128), 1 (256), 0 (one 256, down)
_BLOCKS = (
    [(32, 1)] * 3
    + [(64, 2)] + [(64, 1)] * 3
    + [(128, 2)] + [(128, 1)] * 2
    + [(256, 2)] + [(256, 1)] * 2
    + [(256, 2)]
)  # fmt: skip
_LAYER = re.compile(rb"\x01([\x03-\x20])([a-z_]{3,}[a-z0-9_]*)")


class BadModelFile(ValueError):
    """The descriptor's file is not the network this module knows."""


def _packed_int(data: bytes, pos: int) -> tuple[int, int]:
    """dlib's packed integer at `pos`: a byte of length (and 0x80 when negative), then the
    magnitude, little-endian. Returns (value, the position after it)."""
    head = data[pos]
    n = head & 0x0F
    value = int.from_bytes(data[pos + 1 : pos + 1 + n], "little")
    return (-value if head & 0x80 else value), pos + 1 + n


def _tensor(data: bytes, pos: int) -> tuple[npt.NDArray[np.float32], int]:
    version, pos = _packed_int(data, pos)
    if version != 2:
        raise BadModelFile(f"a tensor of version {version} at byte {pos}, not 2")
    dims = []
    for _ in range(4):
        d, pos = _packed_int(data, pos)
        dims.append(d)
    n = int(np.prod(dims))
    return np.frombuffer(data, "<f4", n, pos).astype(np.float32), pos + 4 * n


def read_weights(path: Path) -> dict[str, list[npt.NDArray[np.float32]]]:
    """The parameters of each convolution, affine and fully connected layer of dlib's file,
    in the order they run: {"con": [flat], "affine": [flat], "fc": [flat]}."""
    data = path.read_bytes()
    out: dict[str, list[npt.NDArray[np.float32]]] = {"con": [], "affine": [], "fc": []}
    for m in _LAYER.finditer(data):
        name = m.group(2)[: m.group(1)[0]]
        end = m.start() + 2 + len(name)
        if name == b"con_4":
            out["con"].append(_tensor(data, end)[0])
        elif name == b"affine_":
            out["affine"].append(_tensor(data, end)[0])
        elif name == b"fc_2":
            _, pos = _packed_int(data, end)  # outputs
            _, pos = _packed_int(data, pos)  # inputs
            out["fc"].append(_tensor(data, pos)[0])
    want = {"con": 1 + 2 * len(_BLOCKS), "affine": 1 + 2 * len(_BLOCKS), "fc": 1}
    got = {k: len(v) for k, v in out.items()}
    if got != want:
        raise BadModelFile(f"{path}: layers {got}, expected {want}")
    return out


def build(path: Path) -> Any:
    """The descriptor network (a torch module in eval mode) with the weights of `path`."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    weights = read_weights(path)
    cons, affines = iter(weights["con"]), iter(weights["affine"])

    def con(cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
        c = nn.Conv2d(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0)
        flat = torch.from_numpy(next(cons))
        if flat.numel() != cout * cin * k * k + cout:
            raise BadModelFile(f"{path}: a {cin}->{cout} {k}x{k} layer of {flat.numel()}")
        c.weight.data = flat[: cout * cin * k * k].reshape(cout, cin, k, k).clone()
        assert c.bias is not None
        c.bias.data = flat[cout * cin * k * k :].clone()
        return c

    class Affine(nn.Module):
        """dlib's affine layer (a batch norm folded): gamma * x + beta, per channel."""

        def __init__(self, c: int) -> None:
            super().__init__()
            flat = torch.from_numpy(next(affines))
            self.gamma = flat[:c].reshape(1, -1, 1, 1).clone()
            self.beta = flat[c:].reshape(1, -1, 1, 1).clone()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gamma + self.beta

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                con(cin, cout, 3, stride), Affine(cout), nn.ReLU(),
                con(cout, cout, 3, 1), Affine(cout),
            )  # fmt: skip
            self.down = stride != 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            if self.down:
                x = F.avg_pool2d(x, 2, 2)
            # dlib's add_prev: the larger of the two shapes, the smaller zero-padded at its
            # end (channels 32 -> 64; 3x3 beside 4x4 at level 1)
            c, h, w = (max(a, b) for a, b in zip(x.shape[1:], y.shape[1:], strict=True))
            x = F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))
            y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2], 0, c - y.shape[1]))
            return F.relu(x + y)

    layers: list[nn.Module] = [con(3, 32, 7, 2), Affine(32), nn.ReLU(), nn.MaxPool2d(3, 2)]
    cin = 32
    for cout, stride in _BLOCKS:
        layers.append(Block(cin, cout, stride))
        cin = cout
    fc = nn.Linear(256, 128, bias=False)
    fc.weight.data = torch.from_numpy(weights["fc"][0]).reshape(256, 128).T.contiguous()
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc]
    return nn.Sequential(*layers).eval()


def describe(net: Any, chips: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
    """The 128-d descriptors of face chips (150x150 RGB, uint8), one row each."""
    import torch

    if not chips:
        return np.zeros((0, 128), np.float32)
    x = (np.stack(chips).astype(np.float32) - _MEAN) / 256.0
    with torch.inference_mode():
        out = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
    return np.asarray(out.numpy(), np.float32)
