"""bf16 numerics at fp32 speed, for checking bf16 accuracy on a CPU without native bf16.

On such a CPU torch's bf16 autocast is emulated in software and runs about 10x slower than
fp32, too slow to score a test set. `emulate_bf16` reproduces its rounding instead, with fp32
kernels: bf16 x bf16 products are exact in fp32 and oneDNN's bf16 kernels accumulate in
fp32, so rounding what a bf16 kernel reads and writes is most of what bf16 changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

#: The layers autocast runs in bf16 (convolutions and matrix products) that have modules.
COMPUTE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def round_bf16(t: torch.Tensor) -> torch.Tensor:
    """`t` rounded to the nearest bf16 (ties to even), kept in its own dtype."""
    if not t.is_floating_point() or t.dtype == torch.bfloat16:
        return t
    return t.to(torch.bfloat16).to(t.dtype)


def _round_any(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return round_bf16(value)
    if isinstance(value, tuple | list):
        return type(value)(_round_any(v) for v in value)
    return value


def _round_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_round_any(a) for a in args)


def _round_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    if (
        isinstance(output, torch.Tensor)
        and output.is_floating_point()
        and not (torch.is_grad_enabled() and output.requires_grad)
    ):
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
        if output.untyped_storage().data_ptr() not in inputs:
            # In place (2x faster here: a fresh large tensor costs more in page faults than
            # the rounding), unless the output is the input or a view of it (nn.Identity,
            # nn.Flatten, in-place ReLU), which the caller may still hold.
            return output.copy_(output.to(torch.bfloat16))
    return _round_any(output)


@contextmanager
def emulate_bf16(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` (in eval mode) with bf16 autocast's rounding, computing in fp32.

    Inside the block:
    - the weights and biases of every convolution and `nn.Linear` are rounded to bf16
      (round to nearest, ties to even), as autocast casts them;
    - the inputs of those layers are rounded to bf16;
    - the outputs of those layers, of every other leaf module (batch norm, activations,
      pooling modules) and of `module` itself are rounded to bf16, as a bf16 kernel
      writes bf16.

    Not emulated: functional operations between modules (residual `x + y`, `F.relu`,
    `F.adaptive_avg_pool2d`, `torch.flatten`) keep their fp32 results until the next module
    rounds its input or output, where real bf16 rounds each one; `torch.matmul` and
    `F.linear` called directly, outside a module, stay fp32; reduction order and any
    intermediate rounding inside a real bf16 kernel (it accumulates in fp32, so this is
    small) are not reproduced. Measured against real autocast on efficientnet_lite0 in
    tests/test_bf16.py.

    On exit the original weights are restored and every hook is removed. Features read
    while emulating are labelled fp32 (`Backbone.precision` does not change): never let
    `extract_features` cache them (`cache_dir=None`). On a `Backbone`, use
    `runtime="torch"`: the OpenVINO path does not run the module's hooks.
    """
    if module.training:
        raise ValueError("emulate_bf16 needs a module in eval mode (batch norm statistics)")
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # by id: shared weights once
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        with torch.no_grad():
            for m in module.modules():
                is_compute = isinstance(m, COMPUTE_LAYERS)
                if is_compute:
                    for p in m.parameters(recurse=False):
                        if p.is_floating_point() and id(p) not in saved:
                            saved[id(p)] = (p.data, p.data.clone())
                            p.data.copy_(round_bf16(p.data))
                    handles.append(m.register_forward_pre_hook(_round_inputs))
                if is_compute or next(m.children(), None) is None or m is module:
                    handles.append(m.register_forward_hook(_round_output))
        yield module
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for data, original in saved.values():
                data.copy_(original)
