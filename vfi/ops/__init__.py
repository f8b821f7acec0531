"""Differentiable warping, splatting and padding operators, and the 8-bit quantisation of
images (plain torch, CPU and GPU)."""

from vfi.ops.warp import (
    FLIPS,
    BackwardWarp,
    flip_views,
    intermediate_flows,
    linear_motion_frame,
    pad_to_multiple,
    quantize,
    rescaled_flows,
    softmax_splat,
    splat_sum,
    warp_backward,
    warp_backward_transpose,
    warp_gram_diagonal,
)

__all__ = [
    "FLIPS",
    "BackwardWarp",
    "flip_views",
    "intermediate_flows",
    "linear_motion_frame",
    "pad_to_multiple",
    "quantize",
    "rescaled_flows",
    "softmax_splat",
    "splat_sum",
    "warp_backward",
    "warp_backward_transpose",
    "warp_gram_diagonal",
]
