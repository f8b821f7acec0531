"""The item every dataset yields, reading images into it, and the training augmentations.

An item is a dict with ``I0`` and ``I1`` [3, H, W], the ground-truth frames ``gt`` [N, 3, H, W]
that lie between them at times ``taus`` [N] (in (0, 1), increasing) and an ``id`` string for
reports; images are float32 in [-1, 1]. Annotated benchmarks add ``level`` (ATD-12K: 0 easy,
1 medium, 2 hard, -1 unknown) and ``roi`` [4] (x, y, width, height of the motion region; all
zero when unknown); sources asked for ``outer=true`` add ``outer`` [2, 3, H, W], the frames
I_-1 and I2 one gap before I0 and after I1 (for multi-frame networks).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vfi.errors import VFIError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def to_model_range(frames: Tensor) -> Tensor:
    """uint8 [..., H, W] in 0..255 to float32 in [-1, 1]."""
    return frames.float().div(127.5).sub(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float images in [-1, 1] to uint8 0..255 (rounded; the inverse of to_model_range)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def window_taus(gap: int) -> Tensor:
    """Times [gap - 1] of the frames strictly between frame 0 and frame ``gap``: j / gap."""
    if not isinstance(gap, int) or gap < 2:
        raise VFIError(f"gap must be an integer of at least 2, got {gap!r}")
    return torch.arange(1, gap, dtype=torch.float32) / gap


def make_item(
    frames: Tensor,
    taus: Tensor | Sequence[float],
    item_id: str,
    with_outer: bool = False,
    **extra,
) -> dict:
    """The item of ``frames`` [N + 2, 3, H, W] (I0, the N ground truths, I1) at ``taus`` [N];
    ``with_outer``: frames [N + 4, 3, H, W] with I_-1 first and I2 last, kept as ``outer``."""
    if with_outer:
        extra["outer"] = torch.stack([frames[0], frames[-1]])
        frames = frames[1:-1]
    item = {
        "I0": frames[0],
        "I1": frames[-1],
        "gt": frames[1:-1],
        "taus": torch.as_tensor(taus, dtype=torch.float32),
        "id": item_id,
    }
    item.update(extra)
    return item


# Pillow's modes for 16-bit greyscale (and 32-bit integer, which 16-bit PNGs may load as)
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image(path: str | Path) -> Tensor:
    """An image file as uint8 RGB [3, H, W]. 8-bit grey, palette, RGBA and the like go through
    Pillow's RGB conversion; 16-bit grey is scaled to 8 bits (round(v / 257)) and repeated
    over the channels (Pillow's conversion would clip it to white); float images are refused."""
    path = Path(path)
    if not path.is_file():
        raise VFIError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in WIDE_GREY_MODES:
                grey = np.asarray(image).astype(np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise VFIError(
                        f"{path}: {image.mode} values outside 0..65535 (expected 16 bits)"
                    )
                array = np.repeat(((grey + 128) // 257).astype(np.uint8)[..., None], 3, axis=-1)
            elif image.mode == "F":
                raise VFIError(f"{path}: floating-point image (expected 8- or 16-bit integers)")
            else:
                array = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise VFIError(f"{path}: too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError):
        raise VFIError(f"corrupt or truncated image: {path}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resize_frames(frames: Tensor, size: Sequence[int] | None = None, scale: float = 1.0) -> Tensor:
    """Antialiased bilinear resize of uint8 frames [N, 3, H, W] to ``size`` [H, W] (or by
    ``scale``), rounded back to uint8."""
    if size is None and scale == 1.0:
        return frames
    out = F.interpolate(
        frames.float(),
        size=None if size is None else tuple(size),
        scale_factor=None if size is not None else scale,
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def crop_bounds(frames: Tensor, size: Sequence[int], name: str) -> tuple[int, int]:
    """The room (H - h, W - w) a ``size`` [h, w] crop leaves in frames [..., H, W], after
    checking it fits; ``name`` is used in the error."""
    (h, w), (ch, cw) = frames.shape[-2:], size
    if ch > h or cw > w:
        raise VFIError(f"{name}: crop {list(size)} is larger than the frames ({h}x{w})")
    return h - ch, w - cw


def centre_crop(frames: Tensor, size: Sequence[int] | None, name: str) -> Tensor:
    """The centred ``size`` [H, W] crop of frames [..., H, W]; ``name`` is used in the error."""
    if size is None:
        return frames
    room_h, room_w = crop_bounds(frames, size, name)
    top, left = room_h // 2, room_w // 2
    return frames[..., top : top + size[0], left : left + size[1]]


MOTION_CHANNELS = 5  # F_t->0 (x, y), F_t->1 (x, y), mask m of W(I0, F_t->0)


def flip_motion(motion: Tensor | None, dim: int) -> Tensor | None:
    """``motion`` [N, 5, H, W] (see :meth:`Augment.apply`) of frames flipped along ``dim``
    (-1: left-right, -2: up-down): the field flipped and the flows' x (or y) negated."""
    if motion is None:
        return None
    sign = torch.ones(MOTION_CHANNELS, dtype=motion.dtype, device=motion.device)
    sign[[0, 2] if dim == -1 else [1, 3]] = -1
    return motion.flip(dim) * sign.view(-1, 1, 1)


def rotate_motion(motion: Tensor | None, k: int) -> Tensor | None:
    """``motion`` [N, 5, H, W] of frames rotated by ``torch.rot90(., k, dims=(-2, -1))``: the
    field rotated and each flow vector (x, y) turned with it, k times (x, y) -> (y, -x)."""
    if motion is None:
        return None
    motion = torch.rot90(motion, k, dims=(-2, -1))
    for _ in range(k % 4):
        x0, y0, x1, y1, mask = motion.unbind(1)
        motion = torch.stack([y0, -x0, y1, -x1, mask], dim=1)
    return motion


def motion_tensor(motion: Tensor | np.ndarray | None) -> Tensor | None:
    """``motion`` (a tensor, a numpy array or a memory-map view) as a float32 tensor."""
    if isinstance(motion, np.ndarray):
        motion = torch.from_numpy(np.ascontiguousarray(motion))
    return None if motion is None else motion.float()


def reverse_motion(motion: Tensor) -> Tensor:
    """``motion`` [N, 5, H, W] at taus of an item played backwards (I0 and I1 swapped, tau ->
    1 - tau, the taus' order reversed): F_t->0 and F_t->1 swap and m becomes 1 - m."""
    motion = motion.flip(0)
    return torch.cat([motion[:, 2:4], motion[:, 0:2], 1 - motion[:, 4:]], dim=1)


@dataclass
class Augment:
    """Random training transforms, applied identically to every frame of an item.

    Args:
        crop: [H, W] random crop (None: whole frames).
        hflip, vflip: flip left-right / up-down with probability 1/2.
        rot90: rotate by a random multiple of 90 degrees (only by 0 or 180 for non-square
            frames, so that a batch keeps one shape).
        reverse: with probability 1/2 play the item backwards: I0 and I1 swap, the ground
            truths reverse and every tau becomes 1 - tau.
        channels: permute the RGB channels at random.
    """

    crop: list[int] | None = None
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    reverse: bool = False
    channels: bool = False

    def __call__(self, frames: Tensor, taus: Tensor, name: str = "item") -> tuple[Tensor, Tensor]:
        """frames [N + 2, C, H, W] (I0, ground truths, I1) and taus [N], transformed."""
        return self.apply(frames, taus, None, name)[:2]

    def apply(
        self, frames: Tensor, taus: Tensor, motion: Tensor | np.ndarray | None, name: str = "item"
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """frames [N + 2, C, H, W] and taus [N] as :meth:`__call__`, with ``motion``
        [N, 5, H, W] (the motion measured at each tau: F_t->0, F_t->1 in pixels (x, y) and the
        mask m of W(I0, F_t->0); a tensor, a numpy array or a memory map, read only where
        cropped) or None transformed alike: the flows are cropped, flipped and rotated with
        their vectors (:func:`flip_motion`, :func:`rotate_motion`), and reversal
        (:func:`reverse_motion`) swaps them. Returns (frames, taus, motion float32 or None)."""
        if self.crop is not None:
            room_h, room_w = crop_bounds(frames, self.crop, name)
            top, left = int(torch.randint(room_h + 1, ())), int(torch.randint(room_w + 1, ()))
            window = (..., slice(top, top + self.crop[0]), slice(left, left + self.crop[1]))
            frames = frames[window]
            motion = None if motion is None else motion[window]
        motion = motion_tensor(motion)
        if self.hflip and bool(torch.rand(()) < 0.5):
            frames, motion = frames.flip(-1), flip_motion(motion, -1)
        if self.vflip and bool(torch.rand(()) < 0.5):
            frames, motion = frames.flip(-2), flip_motion(motion, -2)
        if self.rot90:
            square = frames.shape[-1] == frames.shape[-2]
            k = int(torch.randint(4, ())) if square else 2 * int(torch.randint(2, ()))
            frames, motion = torch.rot90(frames, k, dims=(-2, -1)), rotate_motion(motion, k)
        if self.reverse and bool(torch.rand(()) < 0.5):
            frames, taus = frames.flip(0), 1 - taus.flip(0)
            motion = None if motion is None else reverse_motion(motion)
        if self.channels:
            frames = frames[:, torch.randperm(frames.shape[1])]
        return frames.contiguous(), taus, None if motion is None else motion.contiguous()


@dataclass
class Record:
    """One item on disk: ``paths`` of I0, the ground truths and I1, the ground truths' ``taus``,
    an ``id``, extra tensors (``level``, ``roi``) copied into the item, and optionally the
    ``outer`` neighbours' paths (I_-1, I2: one gap before I0 and after I1)."""

    id: str
    paths: list[Path]
    taus: list[float]
    extra: dict = field(default_factory=dict)
    outer: list[Path] | None = None


class ImageItemDataset(Dataset):
    """Items read from image files, one :class:`Record` each.

    Args:
        records: the items (non-empty).
        name: the dataset, for messages.
        augment: training transforms (None for evaluation).
        resize: [H, W] every frame is resized to (after reading, before cropping).
        crop: [H, W] centred crop (evaluation protocols such as Xiph-4K).
        on_corrupt: ``fail`` raises on a corrupt or truncated image; ``skip`` warns, drops the
            item (the DataModule's collate removes it and reports the count at the end).
        num_items: keep this many items spread evenly over the records (None: all).
    """

    def __init__(
        self,
        records: list[Record],
        name: str,
        augment: Augment | None = None,
        resize: Sequence[int] | None = None,
        crop: Sequence[int] | None = None,
        on_corrupt: str = "fail",
        num_items: int | None = None,
    ):
        if on_corrupt not in ("fail", "skip"):
            raise VFIError(f"on_corrupt must be 'fail' or 'skip', got {on_corrupt!r}")
        if not records:
            raise VFIError(f"{name}: the dataset is empty (no items found)")
        if num_items is not None and num_items < len(records):
            keep = torch.linspace(0, len(records) - 1, num_items).round().long().tolist()
            records = [records[i] for i in keep]
        self.records, self.name = records, name
        self.augment, self.resize, self.crop = augment, resize, crop
        self.on_corrupt = on_corrupt

    def __len__(self) -> int:
        return len(self.records)

    def read_frames(self, record: Record) -> Tensor:
        """uint8 frames [N + 2, 3, H, W] of a record (with its outer neighbours first and
        last: [N + 4, ...]), after checking they share one size."""
        paths = (
            record.paths
            if record.outer is None
            else [record.outer[0], *record.paths, record.outer[1]]
        )
        frames = [read_image(p) for p in paths]
        sizes = {tuple(f.shape[-2:]) for f in frames}
        if len(sizes) > 1:
            listed = ", ".join(
                f"{p.name} {f.shape[-2]}x{f.shape[-1]}" for p, f in zip(paths, frames, strict=True)
            )
            raise VFIError(f"frames of {record.paths[0].parent} differ in size: {listed}")
        return torch.stack(frames)

    def __getitem__(self, index: int) -> dict | None:
        record = self.records[index]
        try:
            frames = self.read_frames(record)
        except VFIError as exc:
            if self.on_corrupt == "fail" or not str(exc).startswith("corrupt"):
                raise
            warnings.warn(f"skipping item {record.id}: {exc}", stacklevel=1)
            return None
        frames = centre_crop(resize_frames(frames, self.resize), self.crop, record.id)
        frames, taus = to_model_range(frames), torch.tensor(record.taus, dtype=torch.float32)
        if self.augment is not None:  # the outer frames too: reversal swaps them
            frames, taus = self.augment(frames, taus, record.id)
        return make_item(frames, taus, record.id, record.outer is not None, **record.extra)
