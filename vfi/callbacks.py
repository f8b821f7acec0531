"""Lightning callbacks: the guard that stops a diverging run, and the side outputs of
validation and test (image panels, the W&B per-item table and a per-item row sink), which read
what ``validation_step`` / ``test_step`` of :class:`vfi.models.base.InterpolatorModule`
return:

    {"rows": per-item score rows, "outs": [(mean, std) [B, 3, H, W] per time],
     "times": [float per time], "batch": the batch}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from vfi.errors import VFIError
from vfi.utils.panels import log_panel, panel_rows, save_png, stack_rows, thumbnail
from vfi.utils.run import wandb_loggers


class EvalPanels(L.Callback):
    """Per validation / test pass: a panel of ``items`` rows (I0 | prediction | ground truth |
    I1 | uncertainty at the time nearest 1/2), from batches spread evenly over the first
    dataloader, written to ``panels/<name><stage>_step<N>.png`` and sent to the image loggers;
    at test time with a W&B logger, also a table with one thumbnail and the scores per item.
    Global rank zero only."""

    def __init__(self, items: int = 4, name: str = ""):
        self.items, self.name = items, name
        self._rows: list = []
        self._table: list = []

    def _batches(self, trainer: L.Trainer, stage: str) -> set[int]:
        counts = trainer.num_val_batches if stage == "val" else trainer.num_test_batches
        n, k = int(counts[0]) if counts else 0, self.items
        return {round(i * (n - 1) / max(k - 1, 1)) for i in range(k)} if n > 0 else set()

    def _collect(self, trainer, outputs, batch_idx, dataloader_idx, stage: str) -> None:
        if not trainer.is_global_zero or not outputs or dataloader_idx != 0:
            return
        panel = batch_idx in self._batches(trainer, stage)
        table = stage == "test" and bool(wandb_loggers(trainer.loggers))
        if not (panel or table):
            return
        times, batch = outputs["times"], outputs["batch"]
        shown = min(range(len(times)), key=lambda j: abs(times[j] - 0.5))
        mean, std = outputs["outs"][shown]
        rows = panel_rows(batch["I0"], mean, batch["gt"][:, shown], batch["I1"], std)
        if panel:
            self._rows += rows[: self.items - len(self._rows)]
        if table:
            for row, scores in zip(rows, outputs["rows"], strict=True):
                values = {k: v for k, v in scores.items() if isinstance(v, float)}
                self._table.append((str(scores.get("id", batch_idx)), thumbnail(row), values))

    def _save(self, trainer: L.Trainer, stage: str) -> None:
        if self._rows:
            panel, step = stack_rows(self._rows), trainer.global_step
            name = f"{self.name}{stage}_step{step:06d}.png"
            out = Path(trainer.default_root_dir) / "panels" / name
            save_png(panel, out)
            log_panel(trainer.loggers, f"{stage}/panel", panel, step)
        self._rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._collect(trainer, outputs, batch_idx, dl_idx, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        self._collect(trainer, outputs, batch_idx, dl_idx, "test")

    def on_validation_epoch_end(self, trainer, pl_module):
        self._save(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._save(trainer, "test")
        if self._table:
            import wandb

            names = sorted({k for _, _, values in self._table for k in values})
            data = [
                [item_id, wandb.Image(image), *(values.get(k) for k in names)]
                for item_id, image, values in self._table
            ]
            for logger in wandb_loggers(trainer.loggers):
                logger.log_table(key="test/items", columns=["id", "panel", *names], data=data)
        self._table = []


class ItemRows(L.Callback):
    """Hand every test batch's per-item rows (``index``, ``id``, scores, curves) to ``sink``
    as soon as they are scored (``vfi.eval`` appends them to a JSONL file to resume from)."""

    def __init__(self, sink: Callable[[list[dict]], None]):
        self.sink = sink

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dl_idx=0):
        if outputs:
            self.sink(outputs["rows"])


class FiniteLoss(L.Callback):
    """Stops a run whose training loss is not finite, with one line naming the first such
    step, before any checkpoint (``last``, ``best``) can hold the weights it produced.

    The first bad step is kept on the loss's device and read (one host synchronisation) at
    every ``log_every_n_steps``-th step, before validation, before a checkpoint is written
    (which must also hold finite weights) and at the end of the fit, so the steps between make
    none."""

    def __init__(self):
        self.first_bad: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:  # a skipped batch
            return
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        new = (~torch.isfinite(loss.detach())) & (self.first_bad < 0)
        self.first_bad = torch.where(new, trainer.global_step, self.first_bad)
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self.check()

    def check(self, *args, **kwargs) -> None:
        if self.first_bad is not None and int(self.first_bad) >= 0:
            raise VFIError(
                f"the training loss is not finite at step {int(self.first_bad)}: the run stops "
                "and keeps its checkpoints from before (lower model.lr, or check the data)"
            )

    on_validation_start = on_train_end = check

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.check()
        weights = {k: v for k, v in checkpoint["state_dict"].items() if v.is_floating_point()}
        finite = [v.isfinite().all() for v in weights.values()]
        if finite and not bool(torch.stack(finite).all()):  # one host synchronisation
            name = next(k for k, ok in zip(weights, finite, strict=True) if not ok)
            raise VFIError(
                f"the weights are not finite at step {trainer.global_step} ({name}): the run "
                "stops and keeps its checkpoints from before (lower model.lr, or check the data)"
            )


class RunRecord(L.Callback):
    """The run's config in every checkpoint, as ``vfi_config``: the model's from its saved
    hyperparameters (``save_hyperparameters``: every constructor argument, networks and
    optimizers as their configs) under its class as ``_target_``, beside what the model does
    not know, the run's ``data`` config and Hydra ``choices``. The loaders rebuild the model
    from it (:func:`vfi.models.checkpoint.model_from_checkpoint`); ``data`` and ``choices``
    are also logged to the loggers as hyperparameters, next to the model's."""

    def __init__(self, data: dict, choices: dict):
        self.data, self.choices = data, choices

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams({"data": self.data, "choices": self.choices})

    def on_save_checkpoint(self, trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["vfi_config"] = {
            "model": model_config(pl_module),
            "data": self.data,
            "choices": self.choices,
        }


def model_config(module: L.LightningModule) -> dict:
    """The Hydra config that rebuilds ``module``: its class and saved hyperparameters."""
    cls = type(module)
    target = f"{cls.__module__}.{cls.__qualname__}"
    return {"_target_": target, "_convert_": "all", "_recursive_": False, **module.hparams}
