"""Fusing motion-compensated candidates with the plain blend, and the spread of the fused
hypotheses (the closed-form part of the per-pixel uncertainty)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor


def _local_mean_abs(x: Tensor, window: int) -> Tensor:
    """Channel-mean |x| averaged over a window x window box: [B, C, H, W] -> [B, 1, H, W]."""
    return F.avg_pool2d(
        x.abs().mean(1, keepdim=True),
        window,
        stride=1,
        padding=window // 2,
        count_include_pad=False,
    )


def motion_confidence(
    w0: Tensor,
    w1: Tensor,
    i0: Tensor,
    i1: Tensor,
    logit: Tensor | None = None,
    gain: float = 4.0,
    window: int = 5,
    eps: float = 1e-2,
) -> Tensor:
    """How far to trust the motion-compensated frames over the blend, c in (0, 1) [B, 1, H, W].

    The warped frames w0 = W(I0, F_t->0), w1 = W(I1, F_t->1) agree where the motion is right;
    the raw frames agree where nothing moves. With the local mean disagreements
    E_w = box(|w0 - w1|), E_b = box(|I0 - I1|) (``window`` pixels, channel mean):

        c = sigmoid(gain (E_b - E_w) / (E_b + E_w + eps) + logit)

    so c -> sigmoid(gain) where the warps agree and the frames do not, c -> sigmoid(-gain)
    where warping makes the frames disagree more than they did (wrong flow), and 1/2 where
    both agree (a still region: there warp and blend coincide). ``logit`` is a learned
    correction (None: 0). All inputs [B, 3, H, W] on one scale.
    """
    e_w, e_b = _local_mean_abs(w0 - w1, window), _local_mean_abs(i0 - i1, window)
    z = gain * (e_b - e_w) / (e_b + e_w + eps)
    return torch.sigmoid(z if logit is None else z + logit)


def fusion_weights(v0: Tensor, v1: Tensor, t: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Weights a, b [B, 1, H, W] of the warped frames W0, W1 in (a W0 + b W1) / (a + b): the
    time-weighted visibilities a = (1 - t) v0, b = t v1 (t [B, 1, 1, 1]), or, with a measured
    fusion mask m (e.g. RIFE's), a = 2 m v0, b = 2 (1 - m) v1 (m itself where v0 = v1 = 1/2)."""
    if mask is None:
        return (1 - t) * v0, t * v1
    return 2 * mask * v0, 2 * (1 - mask) * v1


def fuse(warped: Tensor, blend: Tensor, confidence: Tensor) -> Tensor:
    """c warped + (1 - c) blend: [B, C, H, W] each, c [B, 1, H, W]."""
    return confidence * warped + (1 - confidence) * blend


def mixture_variance(components: list[Tensor], weights: list[Tensor], mean: Tensor) -> Tensor:
    """Per-pixel variance of a mixture of point hypotheses: sum_i p_i (h_i - mean)^2, with
    weights p_i [B, 1, H, W] summing to one and hypotheses h_i, mean [B, C, H, W]."""
    return sum(p * (h - mean) ** 2 for h, p in zip(components, weights, strict=True))


def gradient_energy(x: Tensor) -> Tensor:
    """Squared gradient magnitude per channel, |grad x|^2 = g_x^2 + g_y^2, of x [B, C, H, W]
    with the normalised Sobel kernels (1/8 [1 2 1]^T [-1 0 1] and its transpose) and replicated
    borders: [B, C, H, W]. Equals ``kornia.filters.spatial_gradient(x).pow(2).sum(2)``
    (tests/test_fusion.py) as separable shifted sums, at a sixth of its time on the CPU."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    along_y = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # [B, C, H, W + 2]
    along_x = p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]  # [B, C, H + 2, W]
    g_x = (along_y[..., 2:] - along_y[..., :-2]) / 8
    g_y = (along_x[..., 2:, :] - along_x[..., :-2, :]) / 8
    return g_x**2 + g_y**2


def local_mean(x: Tensor, sigma: float) -> Tensor:
    """G_sigma * x [B, C, H, W]: the Gaussian of std ``sigma`` px (a (2 ceil(2 sigma) + 1)^2
    kernel, separable, replicated borders)."""
    if x.dim() != 4:
        raise ValueError(f"expected [B, C, H, W], got {tuple(x.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    size = 2 * math.ceil(2 * sigma) + 1
    return gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="replicate")


def local_departure(x: Tensor, sigma: float) -> Tensor:
    """x [B, C, H, W] minus its local mean, x - G_sigma * x (:func:`local_mean`). Zero where x
    is locally constant or linear in the interior; for a flow, its departure from a locally
    uniform motion."""
    return x - local_mean(x, sigma)


INFLUENCES = ("clamp", "welsch")  # psi of lowpass_correction


def lowpass_correction(
    frame: Tensor,
    other: Tensor,
    weight: float | Tensor,
    sigma: float,
    cap: float,
    influence: str = "clamp",
) -> Tensor:
    """``frame`` [B, C, H, W] moved towards a second estimate ``other`` of it in the low
    frequencies only: the Gaussian (:func:`local_mean`, std ``sigma`` px) of their difference
    d = other - frame through an influence function psi of scale c = ``cap``,

        frame + weight G_sigma * psi(d),
        psi(d) = clamp(d, -c, c)          (``influence`` "clamp")
        psi(d) = d exp(-d^2 / 2 c^2)      ("welsch")

    ``weight`` is a number or a map [B, 1, H, W]. Two estimates with independent errors
    average to a smaller error; blurring the difference keeps ``frame``'s edges and texture.
    The clamp counts a disagreement beyond c as c; Welsch's psi, redescending, counts one of a
    few c as nothing (one of the two estimates is then plainly wrong)."""
    if frame.shape != other.shape:
        raise ValueError(f"frame {tuple(frame.shape)} and other {tuple(other.shape)} differ")
    if influence not in INFLUENCES:
        raise ValueError(f"influence must be one of {INFLUENCES}, got {influence!r}")
    d = other - frame
    if influence == "clamp":
        psi = d.clamp(-cap, cap)
    else:  # Welsch
        psi = d * torch.exp(-0.5 * d.square() / cap**2) if cap > 0 else torch.zeros_like(d)
    return frame + weight * local_mean(psi, sigma)
