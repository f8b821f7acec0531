"""OpenCV DIS optical flow on batches of [-1, 1] images."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from vfi.ops.warp import quantize

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _grey(x: Tensor) -> np.ndarray:
    rgb = (quantize(x) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


class DISFlow:
    """Dense inverse search flow (Kroeger et al., 2016) from OpenCV, on the 8-bit grey images.
    Picklable and deep-copyable (the OpenCV object is rebuilt on first use).

    ``dis(a, b)`` with a, b [B, 3, H, W] in [-1, 1] returns F_a->b [B, 2, H, W] in pixels, in the
    backward-warping sense a[p] ~ b[p + F(p)], i.e. ``warp_backward(b, F) ~ a``. One OpenCV
    object serves every call: calls from two threads at once need two instances.
    """

    def __init__(self, preset: str = "medium"):
        if preset not in DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}")
        self.preset = preset
        self.dis = None  # the OpenCV object, built on first use (it cannot be pickled)

    def __getstate__(self) -> dict:
        return {"preset": self.preset, "dis": None}

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        if self.dis is None:
            self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        flows = [
            torch.from_numpy(self.dis.calc(_grey(x), _grey(y), None))
            for x, y in zip(a, b, strict=True)
        ]
        return torch.stack(flows).permute(0, 3, 1, 2).to(a)
