"""Image panels: I0 | prediction | ground truth | I1 | uncertainty, one row per item."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import Tensor


def heatmap(std: Tensor, vmax: float | None = None) -> Tensor:
    """Per-pixel standard deviation [B, C, H, W] to an 'inferno' colour map [B, 3, H, W] in [0,1]
    (channel mean; scaled by ``vmax`` or the batch maximum)."""
    s = std.float().mean(1)
    vmax = vmax or float(s.max().clamp_min(1e-8))
    cmap = matplotlib.colormaps["inferno"]
    rgb = cmap((s / vmax).clamp(0, 1).cpu().numpy())[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def make_panel(
    i0: Tensor, pred: Tensor, gt: Tensor, i1: Tensor, std: Tensor, max_rows: int = 4
) -> np.ndarray:
    """uint8 [rows*H, 5*W, 3] grid of [-1, 1] images [B, 3, H, W] and std [B, 3, H, W]."""
    n = min(max_rows, i0.shape[0])
    cols = [(x[:n].detach().float().cpu().clamp(-1, 1) + 1) / 2 for x in (i0, pred, gt, i1)]
    cols.append(heatmap(std[:n].detach()))
    grid = torch.cat([torch.cat(list(row), dim=2) for row in zip(*cols, strict=True)], dim=1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def log_panel(loggers, key: str, image: np.ndarray, step: int) -> None:
    """Send a uint8 HWC panel to every logger that takes images (TensorBoard, W&B)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)
