"""The motion of training windows measured once, on whole frames, and kept on disk.

A per-time motion estimator (``measures_at_time``, e.g. :class:`vfi.nets.rife.RifeMotion`)
measures, for every window of a clip and every ground-truth tau, the flows F_t->0, F_t->1 and
the fusion mask m on the whole (resized) frames. The training items carry them as ``motion``
[N, 5, H, W], cropped, flipped and reversed with the frames (:meth:`vfi.data.items.Augment.apply`),
so the model's training step runs no motion estimation, and the motion it learns on is the one
it meets on whole frames at test time, not the one of a 64 px crop.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import Tensor, nn

from vfi.data.items import MOTION_CHANNELS, to_model_range


@torch.no_grad()
def window_motion(estimator: nn.Module, frames: Tensor, taus: Tensor) -> Tensor:
    """The motion [N, 5, H, W] (F_t->0, F_t->1, m) at the taus [N] of a window of uint8 frames
    [N + 2, 3, H, W] (I0, the ground truths, I1), measured by ``estimator`` in one batch."""
    x = to_model_range(frames)
    n = len(taus)
    found = estimator(x[:1].expand(n, -1, -1, -1), x[-1:].expand(n, -1, -1, -1), taus.to(x))
    return torch.cat([found["to0"], found["to1"], found["mask"]], dim=1)


class MotionCache:
    """The motion of every window of a clip, float16 [windows, N, 5, H, W], measured on first
    use (with a progress bar) and kept as a ``.npy`` file in ``cache_dir``, written atomically
    and named by what it depends on (``key``, the estimator, the windows, the frames' shape);
    read back as a memory map, so an item reads only its crop.

    Args:
        estimator: the per-time motion estimator.
        frames: uint8 frames [F, 3, H, W] of the clip, as the items take them.
        windows: per window, the frame indices [N + 2] of I0, the ground truths and I1.
        taus: the ground-truth times [N].
        key: what identifies the frames (e.g. the file, its size and mtime, the scale).
        cache_dir: the folder of the cache files.
        name: the clip, for the progress bar.
    """

    def __init__(
        self,
        estimator: nn.Module,
        frames: Tensor,
        windows: list[list[int]],
        taus: Tensor,
        key: str,
        cache_dir: str | Path,
        name: str = "clip",
    ):
        ident = repr((key, repr(estimator), windows, taus.tolist(), tuple(frames.shape)))
        digest = hashlib.sha1(ident.encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"motion-{digest}.npy"
        self._array: np.ndarray | None = None
        if not self.path.is_file():
            self._measure(estimator, frames, windows, taus, name)

    def _measure(self, estimator, frames, windows, taus, name) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shape = (len(windows), len(taus), MOTION_CHANNELS, *frames.shape[-2:])
        tmp = self.path.with_suffix(f".tmp{os.getpid()}.npy")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            for j, window in enumerate(track(windows, description=f"motion of {name}")):
                out[j] = window_motion(estimator, frames[window], taus).numpy().astype(np.float16)
            out.flush()
            del out
            os.replace(tmp, self.path)
        finally:  # an interrupted measurement leaves no partial file behind
            tmp.unlink(missing_ok=True)

    @property
    def array(self) -> np.ndarray:
        """The memory map [windows, N, 5, H, W] (opened in each process on first access)."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getitem__(self, index: int) -> np.ndarray:
        """The motion [N, 5, H, W] of window ``index`` (a float16 memory-map view)."""
        return self.array[index]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # workers open their own map
