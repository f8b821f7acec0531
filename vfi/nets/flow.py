"""A small coarse-to-fine bidirectional flow estimator with soft visibility maps, trained from
scratch end to end (in the spirit of IFNet / PWC-Net: each level refines the flow of the one
below from the frames, the frame warped by the current flow, and the flow itself)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.ops import warp_backward


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1))


class FlowLevel(nn.Module):
    """One pyramid level: predicts a flow residual [B, 2, h, w] from (A, B, warp(B, F_AB), F_AB).

    It works at half the level's resolution internally and upsamples its output.
    """

    def __init__(self, width: int, depth: int):
        super().__init__()
        layers = [_conv(3 + 3 + 3 + 2, width, stride=2)]
        layers += [_conv(width, width) for _ in range(depth)]
        self.body = nn.Sequential(*layers)
        self.head = nn.ConvTranspose2d(width, 2, 4, 2, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, a: Tensor, b: Tensor, flow: Tensor) -> Tensor:
        x = torch.cat([a, b, warp_backward(b, flow), flow], dim=1)
        return self.head(self.body(x))


class PyramidFlowNet(nn.Module):
    """Bidirectional flow F_0->1, F_1->0 [B, 2, H, W] (full-resolution pixels) from I0, I1.

    ``scales`` lists the downsampling factor of each level, coarsest first (e.g. [8, 4, 2]).
    Both directions share weights: the F_1->0 pass swaps the frames. The output heads start at
    zero, so an untrained net returns zero flow.
    """

    def __init__(self, scales: list[int] = (8, 4, 2), width: int = 32, depth: int = 3):
        super().__init__()
        self.scales = list(scales)
        self.levels = nn.ModuleList(FlowLevel(width, depth) for _ in self.scales)

    @property
    def multiple(self) -> int:
        """Input sizes must divide by this (each level halves its own resolution)."""
        return 2 * max(self.scales)

    def forward(self, i0: Tensor, i1: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.cat([i0, i1])
        b = torch.cat([i1, i0])
        h, w = a.shape[-2:]
        flow = a.new_zeros(a.shape[0], 2, h // self.scales[0], w // self.scales[0])
        for scale, level in zip(self.scales, self.levels, strict=True):
            size = (h // scale, w // scale)
            if flow.shape[-2:] != size:
                flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
            a_s = F.interpolate(a, size=size, mode="bilinear", align_corners=False, antialias=True)
            b_s = F.interpolate(b, size=size, mode="bilinear", align_corners=False, antialias=True)
            flow = flow + level(a_s, b_s, flow / scale) * scale
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        f01, f10 = flow.chunk(2)
        return f01, f10


class VisibilityNet(nn.Module):
    """Soft visibility maps v0, v1 in [0, 1] ([B, 1, H, W] each) at time tau from the two warped
    frames, the intermediate flows and tau. Starts at v0 = v1 = 0.5."""

    def __init__(self, width: int = 16, depth: int = 2):
        super().__init__()
        layers = [_conv(3 + 3 + 2 + 2 + 1, width)] + [_conv(width, width) for _ in range(depth)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 2, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, w0: Tensor, w1: Tensor, f_t0: Tensor, f_t1: Tensor, tau: Tensor
    ) -> tuple[Tensor, Tensor]:
        tau_map = tau.view(-1, 1, 1, 1).expand(-1, 1, *w0.shape[-2:]).to(w0.dtype)
        logits = self.head(self.body(torch.cat([w0, w1, f_t0, f_t1, tau_map], dim=1)))
        v = torch.sigmoid(logits)
        return v[:, :1], v[:, 1:]
