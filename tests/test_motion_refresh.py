"""model.motion_refresh: motion-aware sampling for both models. With a flow estimator that
returns the true motion, re-estimating it from the chain's estimates changes nothing; with
one that errs on the re-estimates, the result moves."""

import fabricate
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from vfi.diffusion.warp_posterior import time_grid
from vfi.ops import intermediate_flows, rescaled_flows
from vfi.utils.run import CONF_DIR

SLOPE = 1 / 64  # ramp slope per pixel
MOTION = (8.0, -8.0)  # (dx, dy) pixels from I0 to I1: whole pixels per step of T = 8


def ramp_scene(t: float, size: int = 48) -> torch.Tensor:
    """The scene at time t [1, 3, size, size]: two linear ramps and a smooth texture, all
    moving by t MOTION. (The bridge's default bicubic warp is exact on the ramps only for
    whole-pixel shifts.)"""
    side = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(side, side, indexing="ij")
    x, y = xx - t * MOTION[0], yy - t * MOTION[1]
    ramps = [SLOPE * x - 0.4, SLOPE * y - 0.3]
    texture = 0.5 * torch.sin(0.7 * x) * torch.cos(0.5 * y)
    return torch.stack([*ramps, texture])[None]


class RampMotion(nn.Module):
    """The true flow between two frames of :func:`ramp_scene`, read off their ramps:
    a(p) = b(p + F) gives F = (a - b)[ramps] / SLOPE; the median over the pixels ignores the
    border, where warps replicate. From call ``err_from`` on, ``error`` px is added."""

    def __init__(self, error: float = 0.0, err_from: int = 2):
        super().__init__()
        self.calls, self.error, self.err_from = 0, error, err_from

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        shift = ((a[:, :2] - b[:, :2]) / SLOPE).flatten(2).median(2).values
        if self.calls >= self.err_from:
            shift = shift + self.error
        flow = shift[..., None, None].expand(-1, -1, *a.shape[-2:])
        return flow, -flow


def build(name: str, *overrides: str, oracle: RampMotion | None = None):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "paths.output_dir=/tmp/unused", "paths.lpips_backbone=null", f"model={name}",
                "model.lpips_weight=0", *overrides,
            ],
        )  # fmt: skip
    model = instantiate(cfg.model)
    model.log = lambda *args, **kwargs: None
    if oracle is not None:
        model.flow_net = oracle
    return model


def test_rescaled_flows_follow_linear_motion():
    """Flows measured at time `at` and rescaled to t are the linear-motion flows of the pair
    (a translation: F_0->1 = d, F_1->0 = -d), and G itself at t = at."""
    d = torch.tensor([3.0, -1.5]).view(1, 2, 1, 1).expand(2, 2, 4, 5)
    at = torch.tensor([0.25, 0.6])
    a = at.view(-1, 1, 1, 1)
    g0, g1 = -a * d, (1 - a) * d
    for t in (torch.tensor([0.1, 0.5]), at, torch.tensor([0.9, 0.05])):
        want = intermediate_flows(d, -d, t)
        for got, expected in zip(rescaled_flows(g0, g1, at, t), want, strict=True):
            torch.testing.assert_close(got, expected)
    torch.testing.assert_close(rescaled_flows(g0, g1, at, at), (g0, g1))


def _bridge(refresh, error=0.0, *overrides):
    torch.manual_seed(0)
    model = build(
        "warp_posterior", f"model.motion_refresh={refresh}", "model.num_steps=8", *overrides,
        oracle=RampMotion(error),
    )  # fmt: skip
    nn.init.zeros_(model.refiner.out[-1].weight)  # the refiner's output at zero, as untrained
    nn.init.zeros_(model.refiner.out[-1].bias)
    return model.eval()


@pytest.mark.parametrize("refresh, count", [(1, 6), (2, 3), (3, 2)])
def test_bridge_refresh_with_true_motion_leaves_the_path_unchanged(refresh, count):
    """Noise-free reverse pass on the T = 8 grid (7 steps): refreshing after every m steps
    re-reads the motion 6 / 3 / 2 times, and with the true motion every state is unchanged.
    A re-estimate that is 1.5 px off moves the states."""
    i0, i1 = ramp_scene(0.0), ramp_scene(1.0)
    times = time_grid(8)
    plain = _bridge("none").sample_path(i0, i1, times, stop=0, noise=False)
    model = _bridge(refresh)
    calls = model.refresh_calls
    path = model.sample_path(i0, i1, times, stop=0, noise=False)
    assert model.refresh_calls - calls == count == model.flow_net.calls - 1
    for a, b in zip(path, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-4)
    wrong = _bridge(refresh, 1.5).sample_path(i0, i1, times, stop=0, noise=False)
    assert max(float((a - b).abs().max()) for a, b in zip(wrong, plain, strict=True)) > 0.05


def test_bridge_refresh_samples_and_reports_its_network_calls():
    """interpolate_times with K = 2 samples: the extra flow-net calls are counted once per
    batched call, and the refreshed terms are per sample. Without the chains' noise the two
    samples are the two flip views (the pair, and the pair mirrored left-right), each refreshed
    from its own states: each view run alone (K = 1) gives the frame a and one-pass std
    sqrt(var_prior + floor^2) of that sample, and the K = 2 output is their mean with std
    sqrt(((a - b) / 2)^2 + the mean of the two)."""
    model = _bridge(2)
    i0, i1 = ramp_scene(0.0), ramp_scene(1.0)
    times = [0.25, 0.5, 0.75]
    calls = model.refresh_calls
    outs = model.interpolate_times(i0, i1, times, 2, torch.Generator().manual_seed(0))
    # grid of T = 8 stopping at 2/8: steps k = 8 ... 3, refreshes after 2 and 4 steps
    assert model.refresh_calls - calls == 2
    assert all(bool(torch.isfinite(s).all()) for _, s in outs)
    model.sample_noise = False
    outs = model.interpolate_times(i0, i1, times, 2)
    plain = model.interpolate_times(i0, i1, times, 1)
    mirrored = model.interpolate_times(i0.flip(-1), i1.flip(-1), times, 1)
    for (mean, std), (a, std_a), (b, std_b) in zip(outs, plain, mirrored, strict=True):
        b, std_b = b.flip(-1), std_b.flip(-1)
        torch.testing.assert_close(mean, (a + b) / 2, rtol=0, atol=1e-5)
        want = (((a - b) / 2) ** 2 + (std_a**2 + std_b**2) / 2).sqrt()
        torch.testing.assert_close(std, want, rtol=1e-4, atol=1e-5)
        assert float((a - b).abs().max()) > 0.01  # the views' refreshed chains differ


def _resshift(refresh, error=0.0, warp="backward"):
    torch.manual_seed(0)
    model = build(
        "resshift", f"model.motion_refresh={refresh}", f"model.warp={warp}",
        oracle=RampMotion(error),
    )  # fmt: skip
    return model.eval()


@pytest.mark.parametrize("warp", ["backward", "softmax_splat"])
@pytest.mark.parametrize("refresh, count", [(1, 14), (4, 3)])
def test_resshift_refresh_with_true_motion_leaves_the_result_unchanged(refresh, count, warp):
    """15 reverse steps: refreshing after every m steps rebuilds the prior 14 / 3 times from
    the flows of the prediction x0_hat (the untrained denoiser predicts the prior itself), and
    with the true motion the frame is unchanged; 1.5 px off, it moves."""
    i0, i1 = ramp_scene(0.0), ramp_scene(1.0)
    plain, _ = _resshift("none", warp=warp).interpolate(i0, i1, 0.5)
    model = _resshift(refresh, warp=warp)
    mean, _ = model.interpolate(i0, i1, 0.5)
    assert model.refresh_calls == count == model.flow_net.calls - 1
    # forward splatting leaves holes along the border where the motion carries no pixel in;
    # a flow a hair off a whole pixel fills them, so they are left out
    inner = (..., slice(8, -8), slice(8, -8)) if warp == "softmax_splat" else ...
    torch.testing.assert_close(mean[inner], plain[inner], rtol=0, atol=2e-4)
    wrong, _ = _resshift(refresh, 1.5, warp).interpolate(i0, i1, 0.5)
    assert float((wrong - plain).abs().max()) > 0.05


def _ramp_batch(taus=(0.5,)):
    frames = [ramp_scene(t) for t in taus]
    return {
        "I0": ramp_scene(0.0), "I1": ramp_scene(1.0),
        "gt": torch.stack(frames, dim=1), "taus": torch.tensor([list(taus)]),
    }  # fmt: skip


@pytest.mark.parametrize(
    "name, overrides",
    [("resshift", ()), ("warp_posterior", ("model.rollout_prob=0", "model.kappa=1e-6"))],
)
def test_training_reads_the_refreshed_motion(name, overrides):
    """A training step with refresh re-estimates the flows from the chain's estimate (ResShift:
    the prediction; the bridge: the state x_k) and builds the step's prior from them: with
    the true motion the loss is the one without refresh; with a re-estimate 1.5 px off it is
    not."""

    def loss(refresh, error):
        torch.manual_seed(0)
        model = build(name, f"model.motion_refresh={refresh}", *overrides)
        model.flow_net = RampMotion(error)
        torch.manual_seed(1)
        value = model.training_step(_ramp_batch(), 0)
        return float(value.detach()), model.refresh_calls

    plain, calls = loss("none", 0.0)
    assert calls == 0
    same, calls = loss(1, 0.0)
    assert calls == 1 and abs(same - plain) < 1e-4 * plain
    off, _ = loss(1, 1.5)
    assert off > plain * 1.05


@pytest.mark.parametrize("value", [0, -2, 1.5, "often"])
def test_bad_refresh_values_are_rejected(value):
    with pytest.raises(Exception, match=r"model\.motion_refresh"):
        build("resshift", f"model.motion_refresh={value}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resshift", "warp_posterior"])
@pytest.mark.parametrize("data", ["flying", "vimeo90k"])
def test_motion_refresh_trains(task_env, tmp_path, capsys, tested_frames, name, data):
    """fast_dev_run with motion refresh (ResShift: after every 2 steps, the bridge: every
    step), on flying (validated and tested on 32x32 crops of the clips) and on a fabricated
    Vimeo-90K septuplet tree; the test reports the extra flow-net evaluations per frame, and
    the PSNR of the frames its steps produced (recomputed here)."""
    from conftest import psnr_of, run_task

    if data == "flying":
        data_args = ["data=flying", "data.train.size=[32,32]", "+data.val.crop=[32,32]",
                     "+data.test.crop=[32,32]"]  # fmt: skip
    else:
        root = fabricate.vimeo90k(tmp_path / "vimeo", septuplet=True)
        data_args = ["data=vimeo90k", f"data.root={root}", "data.variant=septuplet",
                     "data.train.augment.crop=[32,32]"]  # fmt: skip
    args = [
        f"model={name}", f"model.motion_refresh={2 if name == 'resshift' else 1}", *data_args,
        "data.batch_size=2", "data.num_workers=0", "trainer.fast_dev_run=true", "logger=none",
    ]  # fmt: skip
    metrics = run_task("vfi.train", args, tmp_path / "run")
    assert "test/psnr" in capsys.readouterr().out
    assert metrics["test/psnr"] == pytest.approx(psnr_of(tested_frames), abs=1e-3)
    # resshift: 15 steps per frame, refreshes after 2, 4, ..., 14. The bridge on flying (tested
    # on the clips at tau = 1/2 on the T = 4 grid): steps 1 -> 3/4 -> 1/2, a refresh before the
    # second. On the septuplets the five times 1/6 ... 5/6 join the grid: 0, 1/6, 1/4, 1/3,
    # 1/2, 2/3, 3/4, 5/6, 1; one pass of 7 steps down to 1/6 refreshes before 6 of them.
    expected = 7 if name == "resshift" else 1 if data == "flying" else 6 / 5
    assert metrics["test/refresh_nfe_per_frame"] == pytest.approx(expected)
