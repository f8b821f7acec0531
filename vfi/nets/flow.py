"""A small coarse-to-fine bidirectional flow estimator with soft visibility maps, trained from
scratch end to end (in the spirit of IFNet / PWC-Net: each level refines the flow of the one
below from the frames, the frame warped by the current flow, and the flow itself)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.errors import VFIError
from vfi.nets.layout import channels_last, from_blocks, to_blocks
from vfi.ops import warp_backward
from vfi.ops.dis import DISFlow


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
        return self.head(self.body(channels_last(x))).contiguous()


class PyramidFlowNet(nn.Module):
    """Bidirectional flow F_0->1, F_1->0 [B, 2, H, W] (full-resolution pixels) from I0, I1.

    ``scales`` lists the downsampling factor of each level, coarsest first (e.g. [8, 4, 2]).
    When the frame is large, extra coarser levels (factors 2 scales[0], 4 scales[0], ...) run
    first with the coarsest level's weights, until the coarsest grid is at most
    ``coarse_size`` pixels on its short side, so the range grows with the frame: each level
    can move the flow by a few of its own pixels. Both directions share weights: the F_1->0
    pass swaps the frames.

    ``init="dis"`` starts from OpenCV DIS flow (:class:`vfi.ops.dis.DISFlow`, no gradient) and
    the levels learn a residual on it: F = F_DIS + up(delta). ``init="none"`` starts from zero.
    The output heads start at zero, so an untrained net returns its initial flow exactly.
    """

    def __init__(
        self,
        scales: list[int] = (8, 4, 2),
        width: int = 32,
        depth: int = 3,
        init: str = "none",
        dis_preset: str = "medium",
        coarse_size: int = 32,
    ):
        super().__init__()
        if init not in ("none", "dis"):
            raise VFIError(f"model.flow_net.init must be 'dis' or 'none', got {init!r}")
        self.scales = list(scales)
        self.levels = nn.ModuleList(FlowLevel(width, depth) for _ in self.scales)
        self.init = init
        self.coarse_size = coarse_size
        self.dis = DISFlow(dis_preset) if init == "dis" else None

    @property
    def multiple(self) -> int:
        """Input sizes must divide by this (each level halves its own resolution)."""
        return 2 * max(self.scales)

    def level_plan(self, h: int, w: int) -> list[tuple[int, nn.Module]]:
        """(downsampling factor, level) pairs, coarsest first, for an H x W frame."""
        plan = list(zip(self.scales, self.levels, strict=True))
        scale = self.scales[0]
        while min(h, w) / scale > self.coarse_size and min(h, w) / (2 * scale) >= 8:
            scale *= 2
            plan.insert(0, (scale, self.levels[0]))
        return plan

    def initial_flow(self, a: Tensor, b: Tensor) -> Tensor:
        """F_a->b [N, 2, H, W]: DIS (init="dis") or zero."""
        if self.init == "none":
            return a.new_zeros(a.shape[0], 2, *a.shape[-2:])
        with torch.no_grad():
            return self.dis(a.detach().float(), b.detach().float()).to(a)

    def forward(self, i0: Tensor, i1: Tensor, start: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """F_0->1, F_1->0 [B, 2, H, W] from i0, i1 [B, 3, H, W]; ``start`` [B, 4, H, W]: the
        initial flows (F_0->1, F_1->0) measured elsewhere (e.g. DIS by the data workers, the
        batch's ``pair_flow``) in place of :meth:`initial_flow`."""
        a = torch.cat([i0, i1])
        b = torch.cat([i1, i0])
        h, w = a.shape[-2:]
        start = self.initial_flow(a, b) if start is None else torch.cat(start.chunk(2, dim=1))
        delta = None  # the learned residual, in full-resolution pixels
        for scale, level in self.level_plan(h, w):
            size = tuple(max(2, 2 * round(n / scale / 2)) for n in (h, w))  # even: see FlowLevel
            ratio = a.new_tensor([size[1] / w, size[0] / h]).view(1, 2, 1, 1)
            a_s = F.interpolate(a, size=size, mode="bilinear", align_corners=False, antialias=True)
            b_s = F.interpolate(b, size=size, mode="bilinear", align_corners=False, antialias=True)
            start_s = F.interpolate(start, size=size, mode="bilinear", antialias=True)
            if delta is None:
                delta = torch.zeros_like(start_s)
            elif delta.shape[-2:] != size:
                delta = F.interpolate(delta, size=size, mode="bilinear", align_corners=False)
            delta = delta + level(a_s, b_s, (start_s + delta) * ratio) / ratio
        delta = F.interpolate(delta, size=(h, w), mode="bilinear", align_corners=False)
        f01, f10 = (start + delta).chunk(2)
        return f01, f10


def visibilities(
    net: nn.Module | None, w0: Tensor, w1: Tensor, f_t0: Tensor, f_t1: Tensor, tau: Tensor
) -> tuple[Tensor, ...]:
    """The visibility maps v0, v1 [B, 1, H, W] (and a confidence logit, with one) that ``net``
    (a :class:`VisibilityNet`) gives the warped frames w0, w1 [B, 3, H, W], the flows
    f_t0, f_t1 [B, 2, H, W] and tau [B]; with no net, v0 = v1 = 1/2: the fusion weights are
    then the time weights or the measured mask alone (:func:`vfi.ops.fusion.fusion_weights`)."""
    if net is None:
        half = torch.full_like(w0[:, :1], 0.5)
        return half, half
    return net(w0, w1, f_t0, f_t1, tau)


class VisibilityNet(nn.Module):
    """Soft visibility maps v0, v1 in [0, 1] ([B, 1, H, W] each) at time tau from the two warped
    frames, the intermediate flows (as f / (|f| + flow_scale), bounded whatever the motion) and
    tau. Starts at v0 = v1 = 0.5.

    With ``confidence=True`` it also returns a logit [B, 1, H, W] (starting at 0) that the bridge
    adds to its motion confidence (:func:`vfi.ops.fusion.motion_confidence`).

    With ``unshuffle`` = r > 1 the convolutions run at 1/r of the size: the 11 input channels
    are rearranged r x r into 11 r^2 (``pixel_unshuffle``) and the logits back
    (``pixel_shuffle``); H and W must divide by r (``multiple``).

    With ``symmetric=True`` the maps are symmetric in time by construction: the logits are the
    mean of the net's on the input and on its reversal (w1, w0, f_t1, f_t0, 1 - tau) with
    the roles of the two frames swapped back, so v0 of the pair is v1 of the reversed pair.
    """

    def __init__(
        self,
        width: int = 16,
        depth: int = 2,
        confidence: bool = False,
        flow_scale: float = 4.0,
        unshuffle: int = 1,
        symmetric: bool = False,
    ):
        super().__init__()
        if unshuffle < 1:
            raise VFIError(f"visibility_net.unshuffle must be a positive integer, got {unshuffle}")
        self.flow_scale = flow_scale
        self.symmetric = symmetric
        self.multiple = unshuffle
        cin = (3 + 3 + 2 + 2 + 1) * unshuffle**2
        layers = [_conv(cin, width)] + [_conv(width, width) for _ in range(depth)]
        self.body = nn.Sequential(*layers)
        self.confidence = confidence
        self.head = nn.Conv2d(width, (3 if confidence else 2) * unshuffle**2, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, w0: Tensor, w1: Tensor, f_t0: Tensor, f_t1: Tensor, tau: Tensor
    ) -> tuple[Tensor, ...]:
        tau = tau.reshape(-1).to(w0).expand(len(w0))  # on the frames' device and dtype
        if not self.symmetric:
            logits = self.logits(w0, w1, f_t0, f_t1, tau)
        else:  # one batched call on the pair and its reversal, the reversal's v0, v1 swapped
            pair, reversed_pair = self.logits(
                torch.cat([w0, w1]),
                torch.cat([w1, w0]),
                torch.cat([f_t0, f_t1]),
                torch.cat([f_t1, f_t0]),
                torch.cat([tau, 1 - tau]),
            ).chunk(2)
            swapped = torch.cat([reversed_pair[:, :2].flip(1), reversed_pair[:, 2:]], dim=1)
            logits = (pair + swapped) / 2
        v = torch.sigmoid(logits[:, :2])
        if self.confidence:
            return v[:, :1], v[:, 1:], logits[:, 2:]
        return v[:, :1], v[:, 1:]

    def logits(self, w0: Tensor, w1: Tensor, f_t0: Tensor, f_t1: Tensor, tau: Tensor) -> Tensor:
        """The head's logits [B, 2 (+1), H, W] for one ordering of the pair (tau [B])."""
        tau_map = tau.view(-1, 1, 1, 1).expand(-1, 1, *w0.shape[-2:])
        flows = torch.cat([f_t0, f_t1], dim=1)
        flows = flows / (flows.abs() + self.flow_scale)  # bounded: any frame size, any motion
        x = torch.cat([w0, w1, flows, tau_map], dim=1)
        logits = self.head(self.body(to_blocks(x, self.multiple)))
        return from_blocks(logits, self.multiple).contiguous()
