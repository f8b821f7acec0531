"""python -m vfi.calibrate [ckpt_path=...] [data=clips_val_scales] [std_floor=...]
[std_power=...] [std_terms=...] [sampling=...] output=...: refit a checkpoint's std scale on
validation items and write the calibrated copy.

The model interpolates the test split of ``data`` (validation footage: by default the clips'
validation items at the small scale and at their own size) as it would at validation; the
scale s of its reported std sqrt(s^2 r^2 (std / r)^(2 p) + b^2) is then refitted so that 95%
of the pixel errors fall within +-1.96 of it (:func:`vfi.models.base.calibration_scale`), with
the floor b the checkpoint's or ``std_floor`` and the shape p the checkpoint's or
``std_power`` (r: one 8-bit level). ``std_terms`` sets the bridge's motion term of the std
(``motion_error``, ``motion_error_sigma``, :meth:`WarpPosteriorVFI.prior_variance`;
``residual_error``, :meth:`WarpPosteriorVFI.total_std`) in the
copy before the scale is fitted; ``sampling`` likewise the bridge's options that change its
frames but not its weights (``dis_blend``, ``dis_blend_sigma``, ``dis_blend_cap``,
``dis_blend_speed``, ``dis_blend_influence``: the low-frequency second opinion of DIS;
``quadratic_motion``: the acceleration from the outer neighbours; ``residual_gain``: the
weight of the refiner's residual; ``refiner_views``: the refiner on the step alone or also on
its time reversal; ``warp_mode``: the warps' kernel), and then the copy's test metrics are
measured again on the test split it was trained with (as ``vfi.train`` records them; with
the outer neighbours where the model reads them). The record keeps the options of earlier
calibrations, the new ones over them.
With ``motion_views`` a checkpoint on RIFE motion is measured (and kept) with that many views.
The copy holds the same weights and the new scale and floor
(:func:`vfi.utils.checkpoint.export_checkpoint`); ``vfi.eval`` then scores it.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vfi.errors import VFIError
from vfi.models.checkpoint import model_from_checkpoint
from vfi.utils.checkpoint import checkpoint_or_release, export_checkpoint, load_checkpoint
from vfi.utils.run import device_settings, entry_point, run_hydra


@entry_point("vfi.calibrate")
def calibrate(cfg: DictConfig) -> Path:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    out = Path(str(cfg.output))
    if out.suffix != ".ckpt":
        raise VFIError(f"output must name a .ckpt file, got {out}")
    if out.exists() and not cfg.get("overwrite"):
        raise VFIError(f"{out} exists: give overwrite=true to replace it, or another output")
    ckpt_path = checkpoint_or_release(cfg.ckpt_path, False, Path(cfg.paths.log_dir) / "train")
    ckpt = load_checkpoint(ckpt_path)
    terms = model_terms("std_terms", cfg.get("std_terms"), STD_TERMS)
    sampling = model_terms("sampling", cfg.get("sampling"), SAMPLING_TERMS)
    if terms or sampling:
        config = ckpt["vfi_config"]
        model_cfg = dict(config["model"], **terms, **sampling)
        ckpt = dict(ckpt, vfi_config=dict(config, model=model_cfg))
    views = cfg.get("motion_views")
    model = model_from_checkpoint(ckpt, cfg.paths.lpips_backbone, motion_views=views)
    if not hasattr(model, "uncertainty_scale"):
        raise VFIError(f"{ckpt_path} holds a {type(model).__name__}, which has no std scale")
    for name in ("std_floor", "std_power"):  # the std's floor b and shape p, if given
        if cfg.get(name) is not None:
            setattr(model, name, float(cfg[name]))
    before = float(model.uncertainty_scale)
    model.refit_calibration = True
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        enable_checkpointing=False,
        callbacks=[L.pytorch.callbacks.RichProgressBar()],
    )
    device_settings(trainer, datamodule)
    trainer.validate(model, dataloaders=datamodule.test_dataloader(), verbose=False)
    scale = float(model.uncertainty_scale.cpu())
    state = dict(ckpt["state_dict"], uncertainty_scale=model.uncertainty_scale.detach().cpu())
    config = dict(ckpt["vfi_config"])
    config["model"] = dict(config["model"], std_floor=model.std_floor, std_power=model.std_power)
    if views is not None:  # the flow net's views, as measured here
        config["model"]["flow_net"] = dict(config["model"]["flow_net"], views=int(views))
    metrics = dict(ckpt.get("metrics") or {})
    metrics.pop("test/coverage2", None)  # the old scale's: vfi.eval scores the new one
    data_name = HydraConfig.get().runtime.choices.get("data")
    calibration = {
        "data": data_name,
        "scale": scale,
        "std_floor": model.std_floor,
        "std_power": model.std_power,
    }
    if terms:  # another std: the old one's ranking goes too
        metrics.pop("test/spearman", None)
        metrics.pop("test/ause", None)
        calibration["std_terms"] = terms
    if sampling:  # other frames: the copy is scored again on its own test split
        metrics = retest(trainer, model, ckpt["vfi_config"]["data"])
        calibration["sampling"] = sampling
    if views is not None:
        calibration["motion_views"] = int(views)
    old_info = Path(ckpt_path).with_suffix(".json")
    extra = {"calibration": calibration}
    if old_info.is_file():  # an export: keep the training run it came from and its options
        info = json.loads(old_info.read_text())
        extra["source"] = info.get("source")
        earlier = info.get("calibration") or {}
        for key in ("std_terms", "sampling"):  # the earlier options, the new ones over them
            merged = {**(earlier.get(key) or {}), **calibration.get(key, {})}
            if merged:
                calibration[key] = merged
    out.parent.mkdir(parents=True, exist_ok=True)
    export_checkpoint(ckpt_path, out, metrics, config, extra, dict(ckpt, state_dict=state))
    shape = f"floor {model.std_floor:.4g}, power {model.std_power:.4g}"
    print(f"std scale {before:.4g} -> {scale:.4g} ({shape}); wrote {out}")
    return out


def retest(trainer, model, data: dict) -> dict[str, float]:
    """The ``test/*`` metrics of ``model`` (its std as calibrated) on the test split of the
    data config ``data`` (a checkpoint's)."""
    model.refit_calibration = False
    test = data.get("test")
    if test is not None and model.takes_outer and "outer" in test:  # the neighbours it reads
        test = dict(test, outer=True)
    datamodule = instantiate(OmegaConf.create(dict(data, train=None, val=None, test=test)))
    datamodule.setup("test")
    trainer.test(model, dataloaders=datamodule.test_dataloader(), verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}


STD_TERMS = ("motion_error", "motion_error_sigma", "residual_error")
SAMPLING_TERMS = (
    "dis_blend",
    "dis_blend_sigma",
    "dis_blend_cap",
    "dis_blend_speed",
    "dis_blend_influence",
    "quadratic_motion",
    "residual_gain",
    "refiner_views",
    "warp_mode",
)


def model_terms(option: str, value, allowed: tuple[str, ...]) -> dict:
    """The calibrate ``option`` (``std_terms`` or ``sampling``) as a dict of model options
    (keys from ``allowed``; the model checks their values); {} for null."""
    if value is None:
        return {}
    terms = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    if not isinstance(terms, dict) or not set(terms) <= set(allowed):
        raise VFIError(f"{option} must be null or a mapping of {', '.join(allowed)}, got {terms!r}")
    return terms


def main() -> None:
    run_hydra("vfi.calibrate", "calibrate", calibrate)


if __name__ == "__main__":
    main()
