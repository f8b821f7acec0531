"""The released weights (vfi/weights/release.ckpt): size, config, strict load, and that they
interpolate a real translated pair better than blending."""

import inspect
import json

import numpy as np
import pytest
import torch
from conftest import run_task
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from test_motion_fallback_calibration import translated_pair

from vfi.models.checkpoint import model_from_checkpoint
from vfi.models.warp_posterior import WarpPosteriorVFI
from vfi.utils.checkpoint import RELEASE_CHECKPOINT, load_checkpoint
from vfi.utils.run import CONF_DIR

# a machine path at training time; how Hydra passes the networks (as configs since the
# models record them with save_hyperparameters), not what they are
IGNORED = {"lpips_backbone", "_recursive_"}


def test_release_is_small_and_claims_the_release_config():
    assert RELEASE_CHECKPOINT.stat().st_size <= 10 * 2**20
    ckpt = load_checkpoint(RELEASE_CHECKPOINT)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=release", "paths.output_dir=/tmp/unused"])
    expected = OmegaConf.to_container(cfg.model, resolve=True)
    saved = ckpt["vfi_config"]
    # options added after the release was saved run at their defaults there, as in the config
    defaults = inspect.signature(WarpPosteriorVFI.__init__).parameters
    newer = set(expected) - set(saved["model"])
    assert all(expected[k] == defaults[k].default for k in newer), newer
    assert {k: v for k, v in saved["model"].items() if k not in IGNORED} == {
        k: v for k, v in expected.items() if k not in IGNORED | newer
    }
    assert saved["choices"]["experiment"] == "release"
    choices = saved["choices"]
    assert choices["model"] == "warp_posterior" and choices["model/flow_net"] == "rife"
    assert choices["data"] == "clips_motion"
    assert "optimizer_states" not in ckpt  # weights only
    info = json.loads(RELEASE_CHECKPOINT.with_suffix(".json").read_text())
    assert info["metrics"] == ckpt["metrics"] and info["metrics"]["test/psnr"] > 30
    # the hub copy holds the same tensors, config and metrics
    hub = load_checkpoint(RELEASE_CHECKPOINT.with_suffix(".safetensors"))
    assert hub["state_dict"].keys() == ckpt["state_dict"].keys()
    assert all(torch.equal(hub["state_dict"][k], v) for k, v in ckpt["state_dict"].items())
    assert all(hub[k] == ckpt[k] for k in ("vfi_config", "metrics", "global_step"))


def test_release_loads_strictly_and_beats_the_blend():
    """The release's K = 2 chains are deterministic (no sample noise, no floor), one per flip
    view: the pair as it is and mirrored left-right (before DIS's low-frequency second opinion,
    which the release adds to every frame and which is checked on its own). Each view run
    alone (K = 1) gives its frame and its one-pass std s sqrt(var_prior); the two-chain output
    is their mean, with
    std s sqrt(((a - b) / 2)^2 + mean of the views' var_prior), as total_std documents."""
    model = model_from_checkpoint(RELEASE_CHECKPOINT)  # load_state_dict is strict
    scale = float(model.uncertainty_scale)
    assert scale != 1.0  # fitted on the validation set
    assert not model.sample_noise and model.uncertainty_floor == 0
    assert model.dis_blend > 0  # DIS's second opinion: tests/test_warp_posterior_model.py
    model.dis_blend = 0.0  # here the views alone
    model.std_power = 1.0  # the std before its shape (std_power: tests/test_calibrate.py)
    i0, i1, middle = translated_pair(10, -6, h=96, w=128)
    torch.manual_seed(0)
    mean, std = model.interpolate(i0, i1, 0.5, num_samples=2)
    inner = (..., slice(12, -12), slice(12, -12))
    err_model = (mean - middle)[inner].abs().mean()
    err_blend = ((i0 + i1) / 2 - middle)[inner].abs().mean()
    assert err_model < 0.5 * err_blend
    a, std_a = model.interpolate(i0, i1, 0.5)
    b, std_b = (x.flip(-1) for x in model.interpolate(i0.flip(-1), i1.flip(-1), 0.5))
    torch.testing.assert_close(mean, (a + b) / 2, rtol=0, atol=1e-4)
    want = (scale**2 * ((a - b) / 2) ** 2 + (std_a**2 + std_b**2) / 2).sqrt()
    torch.testing.assert_close(std, want, rtol=1e-3, atol=1e-4)
    views_only = scale * (a - b).abs() / 2
    prior_only = ((std_a**2 + std_b**2) / 2).sqrt()
    assert float((std - views_only).abs().max()) > 0.01  # both terms count
    assert float((std - prior_only).abs().max()) > 0.01


@pytest.mark.slow
def test_eval_and_interpolate_use_the_release_by_default(task_env, tmp_path):
    """No ckpt_path and no model=: both entry points run the released weights; per_clip=true
    adds one row per clip."""
    i0, i1, _ = translated_pair(10, -6, h=64, w=96)
    frames = []
    for name, x in (("a", i0), ("b", i1)):
        path = tmp_path / f"{name}.png"
        image = ((x[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(image).save(path)
        frames.append(str(path))
    out = tmp_path / "out"
    out.mkdir()
    args = [f"frames=[{','.join(frames)}]", f"output={out}", "uncertainty=true"]
    run_task("vfi.interpolate", args, tmp_path / "i")
    # the release's one deterministic pass, whose std needs no second sample
    model = model_from_checkpoint(RELEASE_CHECKPOINT)
    mean, std = model.interpolate(i0, i1, 0.5, num_samples=1)
    for name, want in (("frame", mean), ("std", std)):
        got = torch.from_numpy(np.asarray(Image.open(out / f"{name}_t0.5.png"), dtype=np.float32))
        if name == "frame":
            want = ((want[0] + 1) * 127.5).round().clamp(0, 255).permute(1, 2, 0)
            assert (got - want).abs().max() <= 1
        else:
            assert float(std.max()) > 0 and got.max() > 16  # a map from one pass (zero: <= 16)
    args = ["data=clips", "per_clip=true", "num_samples=1", "trainer.limit_test_batches=1"]
    args.append("motion_bins=null")  # no rows per motion bin (tests/test_motion_bins.py)
    run = tmp_path / "eval"
    run_task("vfi.eval", args, run)
    results = json.loads((run / "metrics.json").read_text())["results"]
    assert [r["model"] for r in results] == ["warp_posterior (release.ckpt)"] * 2
    assert results[1]["data"] == "clips [bigbuckbunny]"  # the first item is its
    assert results[1]["metrics"]["test/psnr"] == pytest.approx(results[0]["metrics"]["test/psnr"])
