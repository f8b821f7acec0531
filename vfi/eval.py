"""python -m vfi.eval ckpt_path=... [data=...] [factor=N]: score a checkpoint (or a baseline
model=...) on triplets, or with factor=N on the N - 1 frames between frames i and i + N."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vfi.errors import VFIError
from vfi.utils.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
from vfi.utils.run import entry_point, instantiate_loggers, report_test_metrics, run_hydra


def sequence_test_data(data_cfg: DictConfig, factor: int) -> DictConfig:
    """The data config with every test item turned into frames i, i+1, ..., i+factor (the
    inner factor - 1 frames are scored): ``gap = factor`` and ``step = 1`` for video,
    ``num_frames = factor + 1`` for flying data."""
    if not isinstance(factor, int) or factor < 2:
        raise VFIError(f"factor must be an integer of at least 2, got {factor!r}")
    test = data_cfg.get("test")
    target = str((test or {}).get("_target_", ""))
    windowed = ("ClipsDataset", "VideoFileDataset", "VideoStreamDataset", "benchmarks.frames")
    if not target.endswith((*windowed, "FlyingDataset")):
        raise VFIError(
            f"factor={factor} needs video, frames or flying test data, got {target or None}"
        )
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    if target.endswith("FlyingDataset"):
        data_cfg.test.num_frames = factor + 1
    else:
        data_cfg.test.gap = factor
        if "step" in data_cfg.test:
            data_cfg.test.step = 1
    return data_cfg


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
    if cfg.get("factor") is not None:
        data_cfg = sequence_test_data(data_cfg, cfg.factor)
        data_name = f"{data_name} x{cfg.factor}"
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
