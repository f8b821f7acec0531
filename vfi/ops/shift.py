"""Grouped spatial-temporal shift (Shift-Net, Li et al., CVPR 2023): multi-frame features
aggregated without flow or attention, by moving channel groups between frames and pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def group_sizes(channels: int, groups: int) -> list[int]:
    """Channel counts of ``groups`` contiguous groups of ``channels`` (the first
    ``channels % groups`` groups one larger)."""
    if not 1 <= groups <= channels:
        raise ValueError(f"cannot split {channels} channels into {groups} groups")
    base, extra = divmod(channels, groups)
    return [base + (g < extra) for g in range(groups)]


def shift_zero(x: Tensor, offset: int, dim: int) -> Tensor:
    """``x`` moved by ``offset`` along ``dim`` with zero fill: out[i] = x[i - offset] where
    0 <= i - offset < size, else 0 (``torch.roll`` without the wrap-around)."""
    size = x.shape[dim]
    if offset == 0:
        return x
    out = torch.zeros_like(x)
    if abs(offset) >= size:
        return out
    src = x.narrow(dim, max(0, -offset), size - abs(offset))
    out.narrow(dim, max(0, offset), size - abs(offset)).copy_(src)
    return out


def grouped_shift(features: Tensor, shifts: Sequence[Sequence[int]]) -> Tensor:
    """Shift channel groups of multi-frame features in time and space, with zero padding.

    Args:
        features: [B, N, C, H, W], N frames of C channels.
        shifts: one (dt, dy, dx) per group; the C channels are split into len(shifts)
            contiguous groups (:func:`group_sizes`).

    Returns:
        [B, N, C, H, W] with, for channel c of group g with shift (dt, dy, dx),
        out[b, n, c, y, x] = features[b, n - dt, c, y - dy, x - dx], or 0 where that index
        is outside the frames or the image: frame n reads frame n - 1 for dt = 1 (the previous
        frame), n + 1 for dt = -1 (the next one).
    """
    if features.dim() != 5:
        raise ValueError(f"features must be [B, N, C, H, W], got {tuple(features.shape)}")
    sizes = group_sizes(features.shape[2], len(shifts))
    parts = []
    for part, shift in zip(features.split(sizes, dim=2), shifts, strict=True):
        dt, dy, dx = (int(s) for s in shift)
        parts.append(shift_zero(shift_zero(shift_zero(part, dt, 1), dy, 3), dx, 4))
    return torch.cat(parts, dim=2)


def shift_pattern(temporal: Sequence[int], spatial: Sequence[int]) -> list[tuple[int, int, int]]:
    """The (dt, dy, dx) groups of Shift-Net's pattern: every temporal offset in ``temporal``
    with no spatial move and with moves of each distance d in ``spatial`` along the 8
    compass directions (d, 0), (-d, 0), (0, d), (0, -d), (d, d), (d, -d), (-d, d), (-d, -d)."""
    moves = [(0, 0)]
    for d in spatial:
        moves += [(d, 0), (-d, 0), (0, d), (0, -d), (d, d), (d, -d), (-d, d), (-d, -d)]
    return [(dt, dy, dx) for dt in temporal for dy, dx in moves]
