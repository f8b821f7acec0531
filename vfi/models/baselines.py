"""Baselines scored by the same code path as the learned models."""

from __future__ import annotations

import torch
from torch import Tensor

from vfi.models.base import InterpolatorModule, check_tau
from vfi.ops import intermediate_flows, warp_backward
from vfi.ops.dis import DISFlow


def _blend(i0: Tensor, i1: Tensor, tau: Tensor) -> Tensor:
    t = tau.to(i0).view(-1, 1, 1, 1)
    return (1 - t) * i0 + t * i1


class BlendInterpolator(InterpolatorModule):
    """I_tau = (1 - tau) I0 + tau I1: the mean of the endpoints at tau = 0.5."""

    def interpolate(self, i0, i1, tau, num_samples=1):
        tau = check_tau(tau).to(i0.device).expand(i0.shape[0])
        return _blend(i0, i1, tau), torch.zeros_like(i0)


class ClassicalInterpolator(InterpolatorModule):
    """OpenCV DIS optical flow both ways, linear-motion intermediate flows, backward warping
    and a tau-weighted blend. No learning."""

    def __init__(self, preset: str = "medium", **kwargs):
        super().__init__(**kwargs)
        self.flow = DISFlow(preset)

    def interpolate(self, i0, i1, tau, num_samples=1):
        tau = check_tau(tau).to(i0.device).expand(i0.shape[0])
        f_t0, f_t1 = intermediate_flows(self.flow(i0, i1), self.flow(i1, i0), tau)
        pred = _blend(warp_backward(i0, f_t0), warp_backward(i1, f_t1), tau)
        return pred, torch.zeros_like(i0)
