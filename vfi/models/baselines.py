"""Baselines scored by the same code path as the learned models."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from vfi.metrics import quantize
from vfi.models.base import InterpolatorModule, check_tau
from vfi.ops import intermediate_flows, warp_backward


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
        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        self.dis = cv2.DISOpticalFlow_create(presets[preset])

    @staticmethod
    def _grey(x: Tensor) -> np.ndarray:
        rgb = (quantize(x) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)

    def _flow(self, a: Tensor, b: Tensor) -> Tensor:
        flows = [
            torch.from_numpy(self.dis.calc(self._grey(x), self._grey(y), None))
            for x, y in zip(a, b, strict=True)
        ]
        return torch.stack(flows).permute(0, 3, 1, 2).to(a)

    def interpolate(self, i0, i1, tau, num_samples=1):
        tau = check_tau(tau).to(i0.device).expand(i0.shape[0])
        f_t0, f_t1 = intermediate_flows(self._flow(i0, i1), self._flow(i1, i0), tau)
        pred = _blend(warp_backward(i0, f_t0), warp_backward(i1, f_t1), tau)
        return pred, torch.zeros_like(i0)
