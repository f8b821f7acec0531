"""Overlapping tiles with feathered seams, for frames too large to process whole."""

from __future__ import annotations

import torch
from torch import Tensor


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering [0, size) with at least ``overlap``
    shared pixels between neighbours (one tile when ``size <= tile``)."""
    if size <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile), got {overlap} for tile {tile}")
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def feather(length: int, overlap: int, device=None) -> Tensor:
    """Blending weights [length]: a linear ramp over ``overlap`` pixels at both ends, 1 inside
    (never 0, so that every pixel of a tile counts)."""
    ramp = torch.arange(length, device=device, dtype=torch.float32)
    edge = torch.minimum(ramp + 1, length - ramp)
    return (edge / max(overlap, 1)).clamp(max=1.0)


def tiled(fn, images: list[Tensor], tile: int | None, overlap: int) -> list[Tensor]:
    """Apply ``fn`` (list of [B, C, h, w] crops -> list of [B, C', h, w] outputs) tile by tile
    over ``images`` [B, C, H, W] and blend the outputs with :func:`feather` weights.

    Returns the blended outputs [B, C', H, W]; with ``tile`` None (or frames no larger than a
    tile) it is ``fn(images)``."""
    h, w = images[0].shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return fn(images)
    sums: list[Tensor] | None = None
    total = torch.zeros(1, 1, h, w, device=images[0].device)
    for top in tile_starts(h, tile, overlap):
        for left in tile_starts(w, tile, overlap):
            rows, cols = slice(top, top + tile), slice(left, left + tile)
            outs = fn([x[..., rows, cols] for x in images])
            th, tw = outs[0].shape[-2:]
            weight = feather(th, overlap, total.device)[:, None] * feather(
                tw, overlap, total.device
            )
            if sums is None:
                sums = [
                    torch.zeros(*o.shape[:2], h, w, device=o.device, dtype=o.dtype) for o in outs
                ]
            for acc, out in zip(sums, outs, strict=True):
                acc[..., rows, cols] += out * weight
            total[..., rows, cols] += weight
    return [acc / total for acc in sums]
