"""Quadratic motion (Xu et al., "Quadratic Video Interpolation", NeurIPS 2019) from the outer
neighbours I_-1 and I2 of a pair: the acceleration that two frames cannot show.

A point of I0 at x(s) = v s + a s^2 / 2 (s in units of the gap I0 -> I1) has F_0->1 = v + a / 2
and F_0->-1 = -v + a / 2, so a = F_0->1 + F_0->-1; from I1's side a = F_1->0 + F_1->2. At time
t it lies off the linear path t F_0->1 by

    d(t) = a / 2 (t^2 - t)

(and off I1's path (1 - t) F_1->0 by the same), so flows from time t to the inputs measured
under linear motion, F_t->0 and F_t->1, become F_t->0 - d and F_t->1 - d. One shift for both
keeps the two warped frames on each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vfi.ops.dis import DISFlow
from vfi.ops.fusion import local_mean
from vfi.ops.scene import working_size


def quadratic_offset(acceleration: Tensor, t: Tensor | float) -> Tensor:
    """d(t) = a / 2 (t^2 - t) [B, 2, H, W]: where a point is at time t relative to linear
    motion between I0 and I1, for the acceleration a [B, 2, H, W] in pixels per gap^2; t a
    float or [B]."""
    if acceleration.dim() != 4 or acceleration.shape[1] != 2:
        raise ValueError(f"expected an acceleration [B, 2, H, W], got {tuple(acceleration.shape)}")
    t = torch.as_tensor(t, dtype=acceleration.dtype, device=acceleration.device)
    t = t.reshape(-1, 1, 1, 1)
    return acceleration / 2 * (t * t - t)


def acceleration_field(
    before: Tensor,
    i0: Tensor,
    i1: Tensor,
    after: Tensor,
    dis: DISFlow,
    short_side: int = 180,
    sigma: float = 4.0,
    speed: float | None = 4.0,
) -> Tensor:
    """The acceleration a [B, 2, H, W] in pixels of the frames I_-1, I0, I1, I2 (``before``,
    ``i0``, ``i1``, ``after``: [B, 3, H, W] in [-1, 1], evenly spaced in time): the mean of
    the two sides' estimates,

        a = G_sigma * ((F_0->1 + F_0->-1) + (F_1->0 + F_1->2)) / 2,

    with OpenCV DIS flows measured on copies resized (area) to a short side of at most
    ``short_side`` px, blurred there by a Gaussian of ``sigma`` px, weighted by
    exp(-|u|^2 / 2 V^2) with V = ``speed`` px (None: 1) and u = G_sigma * (|v0| + |v1|) / 2
    the local speed, v0 = (F_0->1 - F_0->-1) / 2 and v1 = (F_1->2 - F_1->0) / 2 (DIS's flows,
    and the difference of two of them, go wrong first where the motion is fast), and resized
    back (bilinear, the flows scaled with the frame). An item whose ``before`` equals I0 or
    ``after`` equals I1 (a clip's end or a scene cut:
    :func:`vfi.data.video.replace_outer_across_cuts`) has no second side to measure and gets
    a = 0."""
    frames = (before, i0, i1, after)
    if any(x.dim() != 4 or x.shape != i0.shape for x in frames):
        raise ValueError(
            f"expected four [B, 3, H, W] frames, got {[tuple(x.shape) for x in frames]}"
        )
    h, w = i0.shape[-2:]
    size = working_size(h, w, short_side)
    small = [F.interpolate(x, size=size, mode="area") if size != (h, w) else x for x in frames]
    s_before, s0, s1, s_after = small
    f01, f0b, f10, f1a = dis(s0, s1), dis(s0, s_before), dis(s1, s0), dis(s1, s_after)
    acc = local_mean((f01 + f0b + f10 + f1a) / 2, sigma)
    if speed is not None:
        u = ((f01 - f0b).norm(dim=1, keepdim=True) + (f1a - f10).norm(dim=1, keepdim=True)) / 4
        acc = acc * torch.exp(-(local_mean(u, sigma) ** 2) / (2 * speed**2))
    if size != (h, w):
        gain = torch.tensor([w / size[1], h / size[0]], dtype=acc.dtype, device=acc.device)
        acc = F.interpolate(acc, size=(h, w), mode="bilinear", align_corners=False)
        acc = acc * gain.view(1, 2, 1, 1)
    # on the device, without a host read per item
    ends = (before == i0).flatten(1).all(1) | (after == i1).flatten(1).all(1)
    return acc * (~ends).to(acc.dtype).view(-1, 1, 1, 1)
