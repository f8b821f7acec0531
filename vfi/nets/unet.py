"""Conditional U-Net denoiser with sinusoidal step and tau embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.nets.layout import from_blocks, to_blocks


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style embedding [B, dim] of scalars x [B]:
    [cos(x w_k), sin(x w_k)] with w_k = max_period^(-k / (dim/2)), k = 0..dim/2-1."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device) / half)
    args = x.float().view(-1, 1) * freqs.view(1, -1)
    return torch.cat([args.cos(), args.sin()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups, or the largest count that divides ``channels``."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with an additive embedding (scale-free FiLM; none
    for ``emb_dim`` = 0)."""

    def __init__(self, cin: int, cout: int, emb_dim: int = 0):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, 1, 1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout)) if emb_dim else None
        self.out_layers = nn.Sequential(_norm(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.in_layers(x)
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class StepTauConditioned(nn.Module):
    """Base of the networks conditioned on the step t [B] and the time tau [B]:
    :meth:`embed` gives emb [B, emb_dim] = MLP(sin(t)) + MLP(sin(tau * tau_scale))."""

    def __init__(self, emb_dim: int, tau_scale: float):
        super().__init__()
        self.tau_scale = tau_scale
        self.emb_dim = emb_dim
        self.step_mlp = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.tau_mlp = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

    def embed(self, t: Tensor, tau: Tensor) -> Tensor:
        dtype = self.step_mlp[0].weight.dtype  # the embeddings in the weights' dtype (float64 too)
        emb = self.step_mlp(sinusoidal_embedding(t, self.emb_dim).to(dtype))
        tau_emb = sinusoidal_embedding(tau * self.tau_scale, self.emb_dim).to(dtype)
        return emb + self.tau_mlp(tau_emb)


class UNet(StepTauConditioned):
    """U-Net mapping [B, in_channels, H, W] plus step t [B] and tau [B] to [B, out_channels, H, W].

    With ``unshuffle`` = r > 1 it runs at 1/r of the input's size: the input is
    space-to-depth rearranged (``pixel_unshuffle``, [B, r^2 in_channels, H/r, W/r]) and the
    output depth-to-space (``pixel_shuffle``), r^2 times fewer pixels per convolution. H and W
    must divide by ``multiple`` = r 2 ** (len(channel_mult) - 1). The output convolution starts
    at zero.
    """

    def __init__(
        self,
        in_channels: int = 14,
        out_channels: int = 3,
        base_channels: int = 32,
        channel_mult: list[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        emb_dim: int = 128,
        tau_scale: float = 1000.0,
        unshuffle: int = 1,
    ):
        super().__init__(emb_dim, tau_scale)
        if unshuffle < 1:
            raise ValueError(f"UNet unshuffle must be a positive integer, got {unshuffle}")
        widths = [base_channels * m for m in channel_mult]
        self.unshuffle = unshuffle
        self.multiple = unshuffle * 2 ** (len(widths) - 1)
        self.stem = nn.Conv2d(in_channels * unshuffle**2, widths[0], 3, 1, 1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cur = widths[0]
        skips = []
        for i, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cur, width, emb_dim))
                cur = width
            self.down.append(blocks)
            skips.append(cur)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, 2, 1))
        self.mid = ResBlock(cur, cur, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for j in range(num_res_blocks):
                blocks.append(ResBlock(cur + (skips[i] if j == 0 else 0), width, emb_dim))
                cur = width
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, 1, 1))
        self.out = nn.Sequential(
            _norm(cur), nn.SiLU(), nn.Conv2d(cur, out_channels * unshuffle**2, 3, 1, 1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor, tau: Tensor) -> Tensor:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(f"UNet input {tuple(x.shape)} must divide by {self.multiple}")
        emb = self.embed(t, tau)
        h = self.stem(to_blocks(x, self.unshuffle))
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for k, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            if k < len(self.upsample):
                h = self.upsample[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out(h)
        return from_blocks(out, self.unshuffle).contiguous()
