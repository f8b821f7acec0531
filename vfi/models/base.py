"""The evaluation half shared by every interpolator: validation/test metrics and panels."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from vfi.errors import VFIError
from vfi.metrics import image_metrics, try_load_lpips
from vfi.utils.panels import log_panel, panel_rows, save_png, stack_rows


def check_tau(tau: Tensor | float) -> Tensor:
    """tau as a tensor, after checking every value lies strictly inside (0, 1)."""
    tau = torch.as_tensor(tau, dtype=torch.float32)
    if not bool(((tau > 0) & (tau < 1)).all()):
        bad = tau[(tau <= 0) | (tau >= 1)].flatten()[0].item()
        raise VFIError(f"tau must lie in (0, 1), got {bad:g}")
    return tau


class InterpolatorModule(L.LightningModule):
    """Base class: subclasses implement :meth:`interpolate`; this class scores it.

    Args:
        val_samples, test_samples: samples K drawn per item at validation / test time.
        panel_items: items shown in the validation / test panel, spread over the set.
        lpips_backbone: local AlexNet ``features.*`` weights for LPIPS (None: torchvision's).
    """

    def __init__(
        self,
        val_samples: int = 1,
        test_samples: int = 1,
        lpips_backbone: str | None = None,
        panel_items: int = 4,
    ):
        super().__init__()
        self.samples = {"val": val_samples, "test": test_samples}
        self.panel_size = panel_items
        self._panel: list = []
        self.lpips_backbone = lpips_backbone
        self._lpips_cache: dict = {}  # built lazily; a dict keeps it out of the state dict
        self.run_config: dict | None = None  # model/data config, saved into checkpoints

    def interpolate(
        self, i0: Tensor, i1: Tensor, tau: Tensor | float, num_samples: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Frames at time tau: mean [B, 3, H, W] in [-1, 1] and per-pixel std over samples."""
        raise NotImplementedError

    @property
    def lpips_net(self):
        if "net" not in self._lpips_cache:
            self._lpips_cache["net"] = try_load_lpips(self.lpips_backbone)
        return self._lpips_cache["net"]

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> None:
        mean, std = self.interpolate(batch["I0"], batch["I1"], batch["tau"], self.samples[stage])
        scores = image_metrics(mean, batch["It"], self.lpips_net)
        size = batch["I0"].shape[0]
        for name, values in scores.items():
            self.log(
                f"{stage}/{name}",
                values.mean(),
                batch_size=size,
                sync_dist=True,
                prog_bar=name == "psnr",
            )
        if self.trainer.is_global_zero and batch_idx in self._panel_batches(stage):
            rows = panel_rows(batch["I0"], mean, batch["It"], batch["I1"], std)
            self._panel += rows[: self.panel_size - len(self._panel)]

    def _panel_batches(self, stage: str) -> set[int]:
        """Batch indices spread evenly over the stage's first dataloader."""
        counts = self.trainer.num_val_batches if stage == "val" else self.trainer.num_test_batches
        n, k = int(counts[0]), self.panel_size
        return {round(i * (n - 1) / max(k - 1, 1)) for i in range(k)} if n > 0 else set()

    def _save_panel(self, stage: str) -> None:
        """Write the collected panel rows as panels/<stage>_step<N>.png and to the loggers."""
        if self._panel:
            panel, step = stack_rows(self._panel), self.global_step
            out = Path(self.trainer.default_root_dir) / "panels" / f"{stage}_step{step:06d}.png"
            save_png(panel, out)
            log_panel(self.loggers, f"{stage}/panel", panel, step)
        self._panel = []

    def on_validation_epoch_end(self) -> None:
        self._save_panel("val")

    def on_test_epoch_end(self) -> None:
        self._save_panel("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["vfi_config"] = self.run_config

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")
