"""python -m vfi.eval ckpt_path=... [data=...]: score a checkpoint (or a baseline model=...)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vfi.errors import VFIError
from vfi.utils.checkpoint import resolve_checkpoint
from vfi.utils.run import (
    check_group_choices,
    entry_point,
    instantiate_loggers,
    print_metrics,
    write_metrics,
)


def load_checkpoint(path: str) -> dict:
    """A training checkpoint with its saved ``vfi_config``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one line
        raise VFIError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "vfi_config" not in ckpt or "state_dict" not in ckpt:
        raise VFIError(f"{path} is not a vfi training checkpoint (no saved vfi_config)")
    return ckpt


@entry_point("vfi.eval")
def evaluate(cfg: DictConfig) -> dict[str, float]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    choices = dict(HydraConfig.get().runtime.choices)
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / "train")
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    if ckpt is not None:
        saved = ckpt["vfi_config"]
        with open_dict(cfg):
            cfg.model = OmegaConf.create(saved["model"])
            if cfg.data is None:
                cfg.data = OmegaConf.create(saved["data"])
                choices["data"] = saved["choices"].get("data")
        label = f"{saved['choices'].get('model')} ({Path(ckpt_path).name})"
    elif cfg.model is None:
        raise VFIError("nothing to evaluate: give ckpt_path=... or a baseline model=blend|classical")
    else:
        label = choices["model"]
    if cfg.data is None:
        raise VFIError("no test data: give data=... (e.g. data=clips)")
    model = instantiate(cfg.model)
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
    datamodule = instantiate(cfg.data)
    trainer = instantiate(cfg.trainer, logger=instantiate_loggers(cfg.logger) or False,
                          callbacks=[L.pytorch.callbacks.RichProgressBar()])
    trainer.test(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if trainer.is_global_zero:
        table = write_metrics(metrics, cfg.paths.output_dir, label=label, data=str(choices["data"]))
        print_metrics(metrics, f"{label} on {choices['data']}")
        print(table)
    return metrics


def main() -> None:
    check_group_choices(sys.argv[1:], "vfi.eval")
    hydra.main(version_base="1.3", config_path="../conf", config_name="eval")(evaluate)()


if __name__ == "__main__":
    main()
