"""Differentiable warping, splatting and padding operators (plain torch, CPU and GPU)."""

from vfi.ops.warp import (
    intermediate_flows,
    pad_to_multiple,
    softmax_splat,
    splat_sum,
    warp_backward,
    warp_gram_diagonal,
)

__all__ = [
    "intermediate_flows",
    "pad_to_multiple",
    "softmax_splat",
    "splat_sum",
    "warp_backward",
    "warp_gram_diagonal",
]
