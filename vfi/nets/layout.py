"""Memory layout of the convolution stacks' activations."""

from __future__ import annotations

import torch
from torch import Tensor


def channels_last(x: Tensor) -> Tensor:
    """x [B, C, H, W] with channels-last strides (NHWC in memory; same shape and values).

    The convolution stacks run on it: oneDNN's CPU kernels and cuDNN's tensor-core kernels are
    fastest in this layout (on 2 CPU cores the default bridge's training step took 10% less,
    the half-resolution refiner's 640x384 call 25% less). Their outputs go back to the
    contiguous layout with ``.contiguous()``."""
    return x.contiguous(memory_format=torch.channels_last)
