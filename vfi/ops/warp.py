"""Backward warping, forward (softmax) splatting and linear-motion intermediate flows, and the
image helpers beside them (flip views, padding, 8-bit quantisation).

Flows are [B, 2, H, W] in pixels; channel 0 is the x (width) displacement, channel 1 the y one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(x: Tensor, flow: Tensor) -> None:
    if x.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"expected x [B,C,H,W] and flow [B,2,H,W], got {tuple(x.shape)} and {tuple(flow.shape)}"
        )
    if x.shape[0] != flow.shape[0] or x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"x {tuple(x.shape)} and flow {tuple(flow.shape)} differ in batch or size")


def _base_grid(flow: Tensor) -> Tensor:
    """Pixel coordinates [1, 2, H, W] (x, y) on the flow's device and dtype."""
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    return torch.stack([xs, ys]).unsqueeze(0)


def _positions(flow: Tensor) -> Tensor:
    """Sample positions p + flow[p] [B, 2, H, W]; a non-finite one (a diverged flow) is put
    outside the frame, at -2: cast to an index it would be out of range (a crash in
    ``grid_sample``'s backward on the CPU, a device-side assert on CUDA)."""
    return (_base_grid(flow) + flow).nan_to_num(nan=-2.0, posinf=-2.0, neginf=-2.0)


def warp_backward(
    x: Tensor, flow: Tensor, padding_mode: str = "border", mode: str = "bilinear"
) -> Tensor:
    """Backward warp: ``out[p] = x[p + flow[p]]``, sampled bilinearly, bicubically or with
    the mean of the two kernels.

    x: [B, C, H, W]; flow: [B, 2, H, W] in pixels. Implemented with ``grid_sample``
    (align_corners=True), so it is linear in ``x`` and differentiable in both arguments.
    ``mode="bicubic"`` (Keys, a = -0.75) keeps fine texture at fractional positions, where the
    bilinear kernel averages neighbours; it may overshoot the input range. ``mode="mixed"`` is
    (bilinear + bicubic) / 2: sharper than bilinear, with half of bicubic's overshoot.
    """
    if mode == "mixed":
        return (
            warp_backward(x, flow, padding_mode, "bilinear")
            + warp_backward(x, flow, padding_mode, "bicubic")
        ) / 2
    _check(x, flow)
    h, w = x.shape[-2:]
    pos = _positions(flow)
    gx = 2 * pos[:, 0] / max(w - 1, 1) - 1
    gy = 2 * pos[:, 1] / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(
        x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=True
    )


def _splat_at(x: Tensor, pos: Tensor, power: int = 1) -> Tensor:
    """Add every x[p] to the four pixels around the position pos[p] [B, 2, H, W], with
    bilinear weights raised to ``power``; contributions outside the frame are dropped."""
    b, c, h, w = x.shape
    x0 = pos[:, 0].floor()
    y0 = pos[:, 1].floor()
    fx = pos[:, 0] - x0
    fy = pos[:, 1] - y0
    out = x.new_zeros(b, c, h * w)
    src = x.reshape(b, c, h * w)
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        tx, ty = x0 + dx, y0 + dy
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        index = (ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1)).long().reshape(b, 1, h * w)
        weight = (wgt**power * inside).reshape(b, 1, h * w).to(x.dtype)
        out = out.scatter_add(2, index.expand(b, c, h * w), src * weight)
    return out.view(b, c, h, w)


def splat_sum(x: Tensor, flow: Tensor) -> Tensor:
    """Bilinear forward (summation) splatting: every source pixel p adds ``x[p]`` to the four
    pixels around ``p + flow[p]`` with bilinear weights that sum to one.

    Mass landing outside the frame is dropped. x: [B, C, H, W]; flow: [B, 2, H, W].
    """
    _check(x, flow)
    return _splat_at(x, _positions(flow))


def _clamped_positions(flow: Tensor) -> Tensor:
    """Sample positions p + flow[p] [B, 2, H, W] clamped to the frame, as border padding
    does."""
    h, w = flow.shape[-2:]
    pos = _positions(flow)
    return torch.stack([pos[:, 0].clamp(0, w - 1), pos[:, 1].clamp(0, h - 1)], dim=1)


def warp_backward_transpose(y: Tensor, flow: Tensor) -> Tensor:
    """S^T y for S = ``warp_backward(., flow)`` (bilinear, border padding), exactly: every
    output pixel p hands y[p] back to the four input pixels around its clamped sample position
    with the same bilinear weights. y: [B, C, H, W]; flow: [B, 2, H, W].

    Built from ``scatter_add`` only, so it is differentiable twice in y and flow on every
    device (CUDA has no double backward of ``grid_sample``, which an autograd adjoint needs).
    """
    _check(y, flow)
    return _splat_at(y, _clamped_positions(flow))


class BackwardWarp:
    """The linear operator S = ``warp_backward(., flow)`` (bilinear, border padding) on
    [B, C, H, W] images, flow [B, 2, H, W]: ``S(x)``, its exact transpose ``S.transpose(y)``
    (:func:`warp_backward_transpose`) and ``S.gram_diagonal()`` = diag(S^T S) [B, 1, H, W]
    (:func:`warp_gram_diagonal`, computed once): the bridge's
    :class:`vfi.diffusion.warp_posterior.WarpOperator`."""

    def __init__(self, flow: Tensor):
        self.flow = flow
        self._gram: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        return warp_backward(x, self.flow)

    def transpose(self, y: Tensor) -> Tensor:
        return warp_backward_transpose(y, self.flow)

    def gram_diagonal(self) -> Tensor:
        if self._gram is None:
            self._gram = warp_gram_diagonal(self.flow)
        return self._gram


def warp_gram_diagonal(flow: Tensor) -> Tensor:
    """diag(S^T S) [B, 1, H, W] of S = ``warp_backward(., flow)`` (border padding):
    D_q = sum_p w_pq^2 over the bilinear weights w_pq of output pixel p on input pixel q."""
    h, w = flow.shape[-2:]
    return _splat_at(flow.new_ones(flow.shape[0], 1, h, w), _clamped_positions(flow), power=2)


def softmax_splat(x: Tensor, flow: Tensor, metric: Tensor, eps: float = 1e-7) -> Tensor:
    """Softmax splatting (Niklaus & Liu, 2020) in pure torch.

    out[q] = sum_p exp(Z_p) w_pq x_p / (sum_p exp(Z_p) w_pq + eps), with bilinear weights w_pq.
    x: [B, C, H, W]; flow: [B, 2, H, W]; metric Z: [B, 1, H, W]. Uncovered pixels are 0.
    """
    z = metric - metric.amax(dim=(1, 2, 3), keepdim=True).detach()
    weight = z.exp()
    acc = splat_sum(torch.cat([x * weight, weight], dim=1), flow)
    return acc[:, :-1] / (acc[:, -1:] + eps)


def intermediate_flows(f01: Tensor, f10: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
    """Linear-motion flows from time t to the input frames (Super SloMo):

    F_t->0 = -t (1 - t) F_0->1 + t^2 F_1->0
    F_t->1 = (1 - t)^2 F_0->1 - t (1 - t) F_1->0
    f01, f10: [B, 2, H, W]; t: float or [B].
    """
    t = torch.as_tensor(t, dtype=f01.dtype, device=f01.device).reshape(-1, 1, 1, 1)
    f_t0 = -t * (1 - t) * f01 + t * t * f10
    f_t1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
    return f_t0, f_t1


def rescaled_flows(
    g0: Tensor, g1: Tensor, at: Tensor | float, t: Tensor | float
) -> tuple[Tensor, Tensor]:
    """Flows from time t to the input frames, given those measured from a frame at time ``at``
    (0 < at < 1; e.g. a partly denoised estimate, for motion refresh), under linear motion:

    F_t->0 = (t / at) G_0,   F_t->1 = ((1 - t) / (1 - at)) G_1

    g0, g1: [B, 2, H, W] = F_at->0, F_at->1; at, t: floats or [B]. At t = at they are G_0, G_1;
    for a translation they agree with :func:`intermediate_flows` of the true F_0->1, F_1->0.
    """
    at = torch.as_tensor(at, dtype=g0.dtype, device=g0.device).reshape(-1, 1, 1, 1)
    t = torch.as_tensor(t, dtype=g0.dtype, device=g0.device).reshape(-1, 1, 1, 1)
    return t / at * g0, (1 - t) / (1 - at) * g1


FLIPS = ((), (-1,), (-2,), (-2, -1))  # the flip views: none, horizontal, vertical, both


def flip_views(x: Tensor, views: int, num_samples: int) -> Tensor:
    """Sample s of x [K * B, ..., H, W] (K = num_samples stacked sample-major, K a multiple of
    ``views``, which is 1, 2 or 4) flipped by ``FLIPS[s % views]``: none, horizontal,
    vertical, both. Every flip is its own inverse, so the same call maps the views back."""
    if views == 1:
        return x
    if views not in (2, 4) or num_samples % views or len(x) % num_samples:
        raise ValueError(
            f"views must be 1, 2 or 4 and divide the {num_samples} samples of a batch of "
            f"{len(x)}, got {views}"
        )
    blocks = x.view(num_samples // views, views, len(x) // num_samples, *x.shape[1:])
    per_view = [blocks[:, v].flip(FLIPS[v]) if v else blocks[:, v] for v in range(views)]
    return torch.stack(per_view, 1).view_as(x)


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Replicate-pad [B, C, H, W] on the bottom/right so H and W divide by ``multiple``.

    Returns the padded tensor and the original (H, W) to crop back with ``out[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def linear_motion_frame(
    i0: Tensor, i1: Tensor, f01: Tensor, f10: Tensor, t: Tensor | float
) -> Tensor:
    """The frame at time t [B, C, H, W] from the pair I0, I1 [B, C, H, W] and its flows
    F_0->1, F_1->0 [B, 2, H, W] under linear motion (:func:`intermediate_flows`):

        I_t = (1 - t) W(I0, F_t->0) + t W(I1, F_t->1)

    t: float or [B]."""
    f_t0, f_t1 = intermediate_flows(f01, f10, t)
    t = torch.as_tensor(t, dtype=i0.dtype, device=i0.device).reshape(-1, 1, 1, 1)
    return (1 - t) * warp_backward(i0, f_t0) + t * warp_backward(i1, f_t1)


def quantize(x: Tensor) -> Tensor:
    """[-1, 1] images to the 8-bit grid, returned in [0, 1]: round((x + 1) / 2 * 255) / 255."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 255.0
