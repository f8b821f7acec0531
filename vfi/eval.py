"""python -m vfi.eval ckpt_path=... [data=...]: score a checkpoint (or a baseline model=...)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vfi.errors import VFIError
from vfi.utils.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from vfi.utils.run import entry_point, instantiate_loggers, report_test_metrics, run_hydra


@entry_point("vfi.eval")
def evaluate(cfg: DictConfig) -> dict[str, float]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    choices = dict(HydraConfig.get().runtime.choices)
    ckpt_path = resolve_checkpoint(cfg.ckpt_path, Path(cfg.paths.log_dir) / "train")
    data_cfg, data_name = cfg.get("data"), choices.get("data")
    if ckpt_path:
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt["vfi_config"]
        model = model_from_checkpoint(ckpt, cfg.paths.lpips_backbone)
        label = f"{saved['choices'].get('model')} ({Path(ckpt_path).name})"
        if data_cfg is None:
            data_cfg, data_name = OmegaConf.create(saved["data"]), saved["choices"].get("data")
    elif cfg.get("model") is not None:
        model, label = instantiate(cfg.model), choices["model"]
    else:
        raise VFIError(
            "nothing to evaluate: give ckpt_path=... or a baseline model=blend|classical"
        )
    if data_cfg is None:
        raise VFIError("no test data: give data=... (e.g. data=clips)")
    datamodule = instantiate(data_cfg)
    datamodule.setup("test")
    trainer = instantiate(
        cfg.trainer,
        logger=instantiate_loggers(cfg.logger) or False,
        callbacks=[L.pytorch.callbacks.RichProgressBar()],
    )
    trainer.test(model, datamodule=datamodule)
    return report_test_metrics(trainer, cfg.paths.output_dir, label, str(data_name))


def main() -> None:
    run_hydra("vfi.eval", "eval", evaluate)


if __name__ == "__main__":
    main()
