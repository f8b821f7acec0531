"""A LightningModule rebuilt from a checkpoint (the file itself is read by
:func:`vfi.utils.checkpoint.load_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from vfi.errors import VFIError
from vfi.models.base import refresh_steps
from vfi.utils.checkpoint import load_checkpoint


def model_from_checkpoint(
    ckpt: dict | str | Path,
    lpips_backbone: str | None = None,
    motion_refresh: int | str | None = None,
    flip_views: bool | None = None,
    sample_noise: bool | None = None,
    motion_views: int | None = None,
):
    """Rebuild the LightningModule from a checkpoint's saved model config and load its
    (EMA) weights. Returns the module in eval mode. ``motion_refresh``: the sampler's motion
    refresh (every m steps, or "none"; None keeps the checkpoint's own). ``flip_views``: the
    bridge's flip views on (True) or off (False), ``sample_noise``: the bridge's chain noise on
    or off (deterministic), ``motion_views``: a RIFE flow net's views (1, or 2: the pair and
    its time reversal, :class:`vfi.nets.rife.RifeMotion`); None keeps the checkpoint's own."""
    from hydra.utils import instantiate

    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    # networks as configs (as in training), so the rebuilt model's hyperparameters are whole
    model_cfg = dict(ckpt["vfi_config"]["model"], lpips_backbone=lpips_backbone, _recursive_=False)
    model = instantiate(model_cfg)
    model.load_state_dict(ckpt["state_dict"])
    if motion_refresh is not None:
        model.motion_refresh = refresh_steps(motion_refresh, "motion_refresh")
        flow_net = getattr(model, "flow_net", None)
        if model.motion_refresh and getattr(flow_net, "measures_at_time", False):
            raise VFIError(
                f"motion_refresh={motion_refresh} needs a two-frame flow net; this checkpoint "
                "measures its motion with model/flow_net=rife (give motion_refresh=null)"
            )
    for name, value in (("flip_views", flip_views), ("sample_noise", sample_noise)):
        if value is None:
            continue
        if not isinstance(value, bool):
            raise VFIError(f"{name} must be true, false or null, got {value!r}")
        if not hasattr(model, name):
            raise VFIError(
                f"{name} applies to the bridge (model=warp_posterior), not to this "
                f"checkpoint's {type(model).__name__}"
            )
        setattr(model, name, value)
    if motion_views is not None:
        from vfi.nets.rife import RifeMotion, check_views

        if not isinstance(getattr(model, "flow_net", None), RifeMotion):
            raise VFIError(
                f"motion_views applies to checkpoints with model/flow_net=rife, not to this "
                f"{type(model).__name__}'s {type(getattr(model, 'flow_net', None)).__name__}"
            )
        model.flow_net.views = check_views(motion_views)
    return model.eval()
