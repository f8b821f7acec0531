"""Image panels: I0 | prediction | ground truth | I1 | uncertainty, one row per item, each
under a header row that names its columns."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from vfi.utils.run import wandb_loggers, write_atomic

LABELS = ("I0", "prediction", "truth", "I1", "std")


def heatmap(std: Tensor, vmax: float | None = None) -> Tensor:
    """Per-pixel standard deviation [B, C, H, W] to an 'inferno' colour map [B, 3, H, W] in [0,1]
    (channel mean; scaled by ``vmax`` or the batch maximum)."""
    s = std.float().mean(1)
    vmax = vmax or float(s.max().clamp_min(1e-8))
    cmap = matplotlib.colormaps["inferno"]
    rgb = cmap((s / vmax).clamp(0, 1).cpu().numpy())[..., :3]
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font at ``size`` pixels (its fixed bitmap font where FreeType is missing)."""
    return ImageFont.load_default(size=size)


def header(width: int, labels: Sequence[str]) -> np.ndarray:
    """A uint8 [h, len(labels) * width, 3] strip: each label in light grey on black, centred
    over its column of ``width`` pixels (the font shrinks, down to 6 px, until the longest
    label fits; h is the font size + 6)."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = max(6, min(24, width // 6))
    while size > 6 and max(draw.textlength(t, font=_font(size)) for t in labels) > width - 2:
        size -= 1
    font, height = _font(size), size + 6
    strip = Image.new("RGB", (width * len(labels), height))
    draw = ImageDraw.Draw(strip)
    for i, label in enumerate(labels):
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        x = i * width + (width - (right - left)) / 2 - left
        y = (height - (bottom - top)) / 2 - top
        draw.text((x, y), label, fill=(230, 230, 230), font=font)
    return np.asarray(strip)


def panel_rows(
    i0: Tensor,
    pred: Tensor,
    gt: Tensor,
    i1: Tensor,
    std: Tensor,
    labels: Sequence[str] | None = LABELS,
) -> list[np.ndarray]:
    """One uint8 [h + H, 5*W, 3] row per item, I0 | prediction | ground truth | I1 |
    uncertainty, from [-1, 1] images [B, 3, H, W] and the per-pixel std [B, 3, H, W], under a
    :func:`header` of h pixels naming the columns (``labels``; None: no header, h = 0)."""
    cols = [(x.detach().float().cpu().clamp(-1, 1) + 1) / 2 for x in (i0, pred, gt, i1)]
    cols.append(heatmap(std.detach()))
    rows = torch.cat(cols, dim=3).permute(0, 2, 3, 1)
    rows = list((rows.numpy() * 255).round().astype(np.uint8))
    if labels is None:
        return rows
    if len(labels) != len(cols):
        raise ValueError(f"panel_rows needs {len(cols)} labels, got {len(labels)}")
    top = header(i0.shape[-1], tuple(labels))
    return [np.concatenate([top, row]) for row in rows]


def thumbnail(image: np.ndarray, width: int = 480) -> np.ndarray:
    """A uint8 HWC image shrunk (antialiased) to at most ``width`` pixels wide."""
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def stack_rows(rows: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Stack rows of different sizes into one uint8 image, left-aligned on black."""
    width = max(r.shape[1] for r in rows)
    height = sum(r.shape[0] for r in rows) + gap * (len(rows) - 1)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top = 0
    for row in rows:
        out[top : top + row.shape[0], : row.shape[1]] = row
        top += row.shape[0] + gap
    return out


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 HWC image as a PNG, through a temporary name and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def log_panel(loggers, key: str, image: np.ndarray | str | Path, step: int | None = None):
    """Send a uint8 HWC panel (or a PNG file, W&B only) to every logger that takes images
    (TensorBoard, W&B)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and isinstance(image, np.ndarray):
            logger.experiment.add_image(key, image, step, dataformats="HWC")
    for logger in wandb_loggers(loggers):
        picture = image if isinstance(image, np.ndarray) else str(image)
        logger.log_image(key=key, images=[picture], step=step)
