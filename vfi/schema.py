"""The type and range of every config value a user sets, checked as soon as the config is
composed, before any data, model or trainer is built: a wrong value ends the run with one line
that names the key, the value and what is expected (exit 2).

Hydra already refuses unknown keys and groups; this module refuses values of the wrong type
(``seed=abc``, ``test=maybe``) or outside their range (``model.lr=-1``). A key that the
composed config does not hold (``model.kappa`` for ``model=blend``) is not checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from vfi.errors import VFIError


@dataclass(frozen=True)
class Spec:
    """A value of type ``kind`` (``int``, ``float``: an int or a float, ``bool``, ``str``)
    with ``low <= value <= high`` (``low`` excluded when ``open_low``), one of ``choices``,
    or None where ``nullable``."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    nullable: bool = False
    choices: tuple | None = None

    def expected(self) -> str:
        """What the value must be, e.g. ``an integer >= 1``, ``'pixel' or 'latent'``."""
        if self.choices is not None:
            quoted = [repr(c) for c in self.choices]
            text = ", ".join(quoted[:-1]) + " or " + quoted[-1]
        elif self.kind is bool:
            return "true, false or null" if self.nullable else "true or false"
        elif self.kind is str:
            text = "text"
        elif self.open_low and self.low == 0 and self.high is None:
            text = "positive"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.high is not None and not self.open_low and self.kind is int:
                text += f" from {self.low} to {self.high}"
            elif self.high is not None:
                text += f" in {'(' if self.open_low else '['}{self.low}, {self.high}]"
            elif self.low is not None:
                text += f" {'>' if self.open_low else '>='} {self.low}"
        return text + (" or null" if self.nullable else "")

    def accepts(self, value) -> bool:
        if value is None:
            return self.nullable
        if self.choices is not None:
            return value in self.choices
        if self.kind is bool or isinstance(value, bool):
            return self.kind is bool and isinstance(value, bool)
        numeric = {int: (int,), float: (int, float)}.get(self.kind)
        if numeric is None:
            return isinstance(value, self.kind)
        if not isinstance(value, numeric) or not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return low_ok and (self.high is None or value <= self.high)


def positive(kind: type = float, **kw) -> Spec:
    return Spec(kind, 0, open_low=True, **kw)


def at_least(low: float, kind: type = int, **kw) -> Spec:
    return Spec(kind, low, **kw)


SHARE = Spec(float, 0, 1)
WEIGHT = at_least(0, float)
SWITCH = Spec(bool, nullable=True)

SCHEMA: dict[str, Spec] = {
    # every task
    "seed": Spec(int, 0, 2**32 - 1),
    # vfi.train
    "test": Spec(bool),
    # vfi.eval and vfi.interpolate
    "num_samples": at_least(1, nullable=True),
    "flip_views": SWITCH,
    "sample_noise": SWITCH,
    "motion_views": Spec(int, 1, 2, nullable=True),
    "per_clip": Spec(bool),
    "std_floor": at_least(0, float, nullable=True),
    "std_power": positive(nullable=True),
    "overwrite": Spec(bool),
    "uncertainty": Spec(bool),
    "tile": at_least(64, nullable=True),
    "tile_overlap": at_least(0),
    "crf": Spec(int, 0, 51),
    "precision": Spec(str, choices=("bf16", "fp16", "fp32")),
    # the trainer
    "trainer.max_steps": at_least(-1),
    "trainer.num_nodes": at_least(1),
    "trainer.log_every_n_steps": at_least(1),
    "trainer.num_sanity_val_steps": at_least(-1),
    "trainer.gradient_clip_val": at_least(0, float, nullable=True),
    # the data's loaders
    "data.batch_size": at_least(1),
    "data.eval_batch_size": at_least(1),
    "data.num_workers": at_least(0, nullable=True),
    # the diffusion models
    "model.lr": positive(),
    "model.kappa": positive(),
    "model.num_steps": at_least(1),
    "model.posterior": Spec(str, choices=("diagonal", "exact")),
    "model.cg_tol": at_least(0, float),
    "model.cg_max_iter": at_least(1),
    "model.prior_weight": WEIGHT,
    "model.rollout_prob": SHARE,
    "model.eps": positive(),
    "model.fallback": Spec(str, choices=("confidence", "none")),
    "model.fallback_gain": WEIGHT,
    "model.warp_mode": Spec(str, choices=("bicubic", "bilinear", "mixed")),
    "model.flip_views": Spec(bool),
    "model.sample_noise": Spec(bool),
    "model.uncertainty_floor": WEIGHT,
    "model.std_floor": WEIGHT,
    "model.std_power": positive(),
    "model.motion_error": WEIGHT,
    "model.motion_error_sigma": positive(nullable=True),
    "model.dis_blend": WEIGHT,
    "model.dis_blend_sigma": positive(),
    "model.dis_blend_cap": WEIGHT,
    "model.dis_blend_speed": positive(nullable=True),
    "model.quadratic_motion": WEIGHT,
    "model.residual_gain": WEIGHT,
    "model.residual_error": WEIGHT,
    "model.lpips_weight": WEIGHT,
    "model.aux_weight": WEIGHT,
    "model.reg_weight": WEIGHT,
    "model.outer_fallback": Spec(bool),
    "model.scene_cut": Spec(bool),
    "model.val_samples": at_least(1),
    "model.test_samples": at_least(1),
    "model.warp": Spec(str, choices=("backward", "softmax_splat")),
    "model.splat_alpha": positive(),
    "model.tau_mode": Spec(str, choices=("fixed", "ifd")),
    "model.ifd_threshold": SHARE,
    "model.ifd_kernel": at_least(1),
    "model.space": Spec(str, choices=("pixel", "latent")),
    "model.schedule.num_steps": at_least(1),
    "model.schedule.power": positive(),
    "model.schedule.kappa": positive(),
    "model.schedule.min_noise_level": positive(),
    "model.schedule.etas_end": Spec(float, 0, 1, open_low=True),
    "model.scale": positive(),
    "model.views": Spec(int, 1, 2),
    "model.flow_net.views": Spec(int, 1, 2),
}


def check_config(cfg: DictConfig) -> None:
    """Refuse the first value of ``cfg`` that its :data:`SCHEMA` entry does not accept."""
    for key, spec in SCHEMA.items():
        value = OmegaConf.select(cfg, key, default=KeyError, throw_on_missing=False)
        if value is KeyError or value == "???":  # absent, or missing (its own error later)
            continue
        if not spec.accepts(value):
            raise VFIError(f"{key} must be {spec.expected()}, got {value!r}")
