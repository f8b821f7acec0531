"""python -m vfi.train [overrides]: fit a model, then test its best checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from vfi.callbacks import FiniteLoss, RunRecord
from vfi.errors import VFIError
from vfi.utils.checkpoint import export_checkpoint, load_checkpoint, resolve_checkpoint
from vfi.utils.panels import log_panel
from vfi.utils.report import aggregate, plot_report
from vfi.utils.run import (
    close_loggers,
    device_settings,
    entry_point,
    instantiate_loggers,
    report_test_metrics,
    run_hydra,
)


@entry_point("vfi.train")
def train(cfg: DictConfig) -> dict[str, float] | float:
    """Fit and test; the test metrics, or with ``optimized_metric`` its best value (for
    sweepers)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    name = cfg.get("optimized_metric")
    if name is not None and not str(name).startswith(("val/", "train/")):
        raise VFIError(f"optimized_metric must name a logged val/ or train/ metric, got {name!r}")
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / cfg.task_name)
    own_last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path is None and own_last.is_file():  # a requeued job, restarted in its own folder
        ckpt_path = str(own_last)
    if ckpt_path:
        check_resumable(ckpt_path, cfg.model)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # bad data fails here, before the trainer starts talking
    model = instantiate(cfg.model)
    choices = dict(HydraConfig.get().runtime.choices)
    if type(model).training_step is L.LightningModule.training_step:
        name = choices.get("model")
        raise VFIError(
            f"model={name} has nothing to train (a baseline): score it with "
            f"python -m vfi.eval model={name} data=..."
        )
    backend = cfg.get("compile")
    if backend:
        backend = "inductor" if backend is True else backend
        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            raise VFIError(f"compile must be true, false or one of {known}, got {backend!r}")
        model.compile_networks(backend)
    loggers = instantiate_loggers(cfg.logger)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    if not loggers:  # logger=none: the learning-rate monitor has nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks.append(FiniteLoss())  # whatever callbacks= gives: a diverging run stops
    run = {k: v for k, v in choices.items() if "hydra" not in k}
    callbacks.append(RunRecord(OmegaConf.to_container(cfg.data, resolve=True), run))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    device_settings(trainer, datamodule)
    try:
        metrics = fit_and_test(cfg, trainer, model, datamodule, ckpt_path, choices)
        if cfg.get("optimized_metric"):  # what a sweeper (Optuna) optimises
            return optimized_value(trainer, cfg.optimized_metric)
        return metrics
    finally:
        close_loggers(loggers)


def optimized_value(trainer, name: str) -> float:
    """The best value of the logged metric ``name`` over the fit: the score of the checkpoint
    callback that monitors it, else its last logged value; one line when it was never logged."""
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor == name and callback.best_model_score is not None:
            return float(callback.best_model_score)
    if name in trainer.callback_metrics:
        return float(trainer.callback_metrics[name])
    logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
    raise VFIError(f"optimized_metric={name} was never logged (logged: {logged})")


def check_resumable(ckpt_path: str, model_cfg: DictConfig) -> None:
    """A readable vfi training checkpoint (with optimizer state) of the model being trained,
    else one line."""
    ckpt = load_checkpoint(ckpt_path)
    saved = ckpt["vfi_config"]["model"].get("_target_")
    if saved != model_cfg.get("_target_"):
        raise VFIError(
            f"cannot resume from {ckpt_path}: it holds a {saved} model, this run trains "
            f"{model_cfg.get('_target_')} (give the same model=, or no ckpt_path)"
        )
    if "optimizer_states" not in ckpt:
        raise VFIError(
            f"cannot resume from {ckpt_path}: it holds weights only (a release export), "
            "not a training state"
        )


def fit_and_test(cfg, trainer, model, datamodule, ckpt_path, choices) -> dict[str, float]:
    """Fit (resuming from ``ckpt_path``), then test the best checkpoint's weights."""
    if ckpt_path:
        print(f"resuming from {ckpt_path}")
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not cfg.test:
        return {}
    best = next(
        (
            cb.best_model_path
            for cb in trainer.checkpoint_callbacks
            if cb.monitor and cb.best_model_path
        ),
        None,
    )
    if best:  # the EMA weights that validation scored (what vfi.eval loads too)
        model.load_state_dict(load_checkpoint(best)["state_dict"])
    trainer.test(model, datamodule=datamodule)
    label = f"{choices['model']} ({Path(best).name if best else 'final weights'})"
    metrics = report_test_metrics(trainer, cfg.paths.output_dir, label, choices["data"])
    if trainer.is_global_zero:
        record = {"model": label, "data": choices["data"], "metrics": metrics}
        curves = {label: aggregate(model.epoch_rows["test"])[1]}
        report = plot_report([record], curves, Path(cfg.paths.output_dir) / "report.png")
        log_panel(trainer.loggers, "test/report", report)
        if cfg.get("export") and best:
            out = Path(cfg.paths.output_dir) / cfg.export  # with the config it was tested with
            out = export_checkpoint(best, out, metrics)
            print(f"exported {out} (weights, config and test metrics)")
    return metrics


def main() -> None:
    run_hydra("vfi.train", "train", train)


if __name__ == "__main__":
    main()
