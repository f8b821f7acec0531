"""Multi-frame backbone of grouped spatial-temporal shift blocks (after Shift-Net, Li et al.,
CVPR 2023), with the same call as :class:`vfi.nets.unet.UNet` plus the context frames."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.nets.unet import StepTauConditioned, _norm
from vfi.ops.shift import grouped_shift, shift_pattern


class ShiftBlock(nn.Module):
    """h + conv(SiLU(norm(conv(SiLU(norm(shift(h)))) + emb))) on every frame of h
    [B, N, C, H, W]: the grouped shift moves channel groups between frames and pixels, the
    2D convolutions (shared over frames) fuse what arrived."""

    def __init__(self, channels: int, emb_dim: int, shifts: Sequence[Sequence[int]]):
        super().__init__()
        self.shifts = [tuple(s) for s in shifts]
        self.norm_in = _norm(channels)
        self.conv_in = nn.Conv2d(channels, channels, 3, 1, 1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, channels))
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        b, n = h.shape[:2]
        y = grouped_shift(h, self.shifts).flatten(0, 1)
        y = (
            self.conv_in(F.silu(self.norm_in(y)))
            + self.emb(emb).repeat_interleave(n, 0)[..., None, None]
        )
        y = self.conv_out(F.silu(self.norm_out(y)))
        return h + y.view(b, n, *y.shape[1:])


class ShiftNet(StepTauConditioned):
    """[B, in_channels, H, W] plus step t [B], tau [B] and context frames
    [B, context_frames, frame_channels, H, W] to [B, out_channels, H, W].

    The input stack (the model's usual conditioning) and each context frame get their own
    stem; the frames are ordered in time, the input in the middle (I_-1, I0, input, I1, I2 for
    4 context frames), and pass through a U-Net of :class:`ShiftBlock` levels (strided
    convolutions down, nearest upsampling with skips up, per frame). The output is read from
    the input's frame; its convolution starts at zero. H and W must divide by ``multiple``.

    Args:
        temporal: the groups' time offsets (frame n reads n - dt).
        spatial: the move distances of the groups (see :func:`vfi.ops.shift.shift_pattern`).
    """

    def __init__(
        self,
        in_channels: int = 15,
        out_channels: int = 3,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        emb_dim: int = 128,
        tau_scale: float = 1000.0,
        context_frames: int = 4,
        frame_channels: int = 3,
        temporal: Sequence[int] = (-1, 0, 1),
        spatial: Sequence[int] = (1,),
    ):
        super().__init__(emb_dim, tau_scale)
        if context_frames < 0 or context_frames % 2:
            raise ValueError(
                f"context_frames must be even (before and after), got {context_frames}"
            )
        self.context_frames, self.frame_channels = context_frames, frame_channels
        shifts = shift_pattern(temporal, spatial)
        widths = [base_channels * m for m in channel_mult]
        if widths[0] < len(shifts):
            raise ValueError(
                f"base_channels={base_channels} is fewer than the {len(shifts)} shift groups"
            )
        self.multiple = 2 ** (len(widths) - 1)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1)
        self.context_stem = nn.Conv2d(frame_channels, widths[0], 3, 1, 1)
        self.down = nn.ModuleList(
            nn.ModuleList(ShiftBlock(w, emb_dim, shifts) for _ in range(num_res_blocks))
            for w in widths
        )
        self.downsample = nn.ModuleList(
            nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.mid = ShiftBlock(widths[-1], emb_dim, shifts)
        self.upsample = nn.ModuleList(
            nn.Conv2d(b, a, 3, 1, 1) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.merge = nn.ModuleList(nn.Conv2d(2 * w, w, 1) for w in widths[:-1])
        self.up = nn.ModuleList(
            nn.ModuleList(ShiftBlock(w, emb_dim, shifts) for _ in range(num_res_blocks))
            for w in widths[:-1]
        )
        self.out = nn.Sequential(
            _norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, 1, 1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def frames(self, x: Tensor, context: Tensor) -> Tensor:
        """Stem features [B, N, C0, H, W] of (context before, x, context after)."""
        expected = (x.shape[0], self.context_frames, self.frame_channels, *x.shape[-2:])
        if tuple(context.shape) != expected:
            raise ValueError(f"context must be {list(expected)}, got {list(context.shape)}")
        b, m = context.shape[:2]
        ctx = self.context_stem(context.flatten(0, 1)).view(b, m, -1, *x.shape[-2:])
        return torch.cat([ctx[:, : m // 2], self.stem(x)[:, None], ctx[:, m // 2 :]], dim=1)

    def forward(self, x: Tensor, t: Tensor, tau: Tensor, context: Tensor) -> Tensor:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(f"ShiftNet input {tuple(x.shape)} must divide by {self.multiple}")
        emb = self.embed(t, tau)
        h = self.frames(x, context)
        b, n = h.shape[:2]
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.downsample):
                skips.append(h)
                y = self.downsample[i](h.flatten(0, 1))
                h = y.view(b, n, *y.shape[1:])
        h = self.mid(h, emb)
        for i in reversed(range(len(self.up))):
            y = self.upsample[i](F.interpolate(h.flatten(0, 1), scale_factor=2.0, mode="nearest"))
            y = self.merge[i](torch.cat([y, skips[i].flatten(0, 1)], dim=1))
            h = y.view(b, n, *y.shape[1:])
            for block in self.up[i]:
                h = block(h, emb)
        return self.out(h[:, self.context_frames // 2])
