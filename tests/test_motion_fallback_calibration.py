"""Issue 10's parts: DIS-initialised flow, the fallback towards blending, the std calibration."""

import pytest
import skimage.data
import torch
from test_warp_posterior_model import build

from vfi.models.base import calibration_scale
from vfi.nets.flow import PyramidFlowNet
from vfi.ops import intermediate_flows


def _photo() -> torch.Tensor:
    """A real photo [3, 512, 512] in [-1, 1]."""
    return torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float() / 127.5 - 1


def translated_pair(dx: int, dy: int, h: int = 192, w: int = 320):
    """I0 = a window of the photo, I1 the window moved by (dx, dy), the middle frame the window
    moved by half that: I0[p] = I1[p - s], so F_0->1 = -s and F_1->0 = +s, s = (dx, dy)."""
    photo, top, left = _photo(), 150, 80

    def window(ox: int, oy: int) -> torch.Tensor:
        return photo[:, top + oy : top + oy + h, left + ox : left + ox + w][None]

    return window(0, 0), window(dx, dy), window(dx // 2, dy // 2)


@pytest.mark.parametrize("shift", [(36, -12), (-8, 4)])
def test_dis_init_returns_the_shift_of_a_translation(shift):
    """An untrained init=dis net returns DIS flow: for a pure translation by more than 10% of
    the width (36 of 320 px), F_0->1 = -s and F_1->0 = s away from the uncovered border."""
    dx, dy = shift
    i0, i1, _ = translated_pair(dx, dy)
    net = PyramidFlowNet(init="dis")
    f01, f10 = net(i0, i1)
    m = 48  # leave out the band that leaves the frame
    inner = (..., slice(m, -m), slice(m, -m))
    expected = torch.tensor([dx, dy], dtype=torch.float32).view(1, 2, 1, 1)
    assert (f01[inner] + expected).abs().mean() < 0.25
    assert (f10[inner] - expected).abs().mean() < 0.25
    zero = PyramidFlowNet(init="none")(i0, i1)
    assert all(torch.equal(f, torch.zeros_like(f)) for f in zero)


def test_coarse_levels_grow_with_the_frame():
    """The coarsest grid is at most coarse_size pixels on the short side, whatever the frame,
    with extra levels sharing the coarsest level's weights."""
    net = PyramidFlowNet(scales=[8, 4, 2], coarse_size=32)
    assert [s for s, _ in net.level_plan(64, 64)] == [8, 4, 2]
    plan = net.level_plan(1088, 1920)
    assert [s for s, _ in plan] == [64, 32, 16, 8, 4, 2]
    assert all(level is net.levels[0] for _, level in plan[:4])
    assert 1088 / plan[0][0] <= 32
    with pytest.raises(Exception, match="init"):
        PyramidFlowNet(init="raft")


def _mean_error(x: torch.Tensor, target: torch.Tensor) -> float:
    return float((x - target).abs().mean().detach())


def test_fallback_with_a_random_flow_is_no_worse_than_the_blend():
    """The bridge's prior mean at l = 1/2 (untrained visibility, fallback=confidence): with
    random flows it stays at least as close to the true middle frame as the blend; with the
    true flows it is far closer than the blend. Without the fallback the random flows make it
    worse than the blend."""
    torch.manual_seed(0)
    i0, i1, middle = translated_pair(10, -6, h=96, w=128)
    blend = (i0 + i1) / 2
    l = torch.tensor([0.5])
    g = torch.Generator().manual_seed(1)
    noise = [torch.randn(1, 2, 12, 16, generator=g) for _ in range(2)]
    rough = [
        torch.nn.functional.interpolate(n, size=(96, 128), mode="bilinear") * 12 for n in noise
    ]
    s = torch.tensor([10.0, -6.0]).view(1, 2, 1, 1).expand(1, 2, 96, 128)
    fused = build("model.fallback=confidence")
    plain = build("model.fallback=none")
    inner = (..., slice(16, -16), slice(16, -16))
    err_blend = _mean_error(blend[inner], middle[inner])
    rough, true = intermediate_flows(*rough, l), intermediate_flows(-s, s, l)
    err_random = _mean_error(fused.bridge_terms(i0, i1, *rough, l)["mu"][inner], middle[inner])
    err_true = _mean_error(fused.bridge_terms(i0, i1, *true, l)["mu"][inner], middle[inner])
    err_plain = _mean_error(plain.bridge_terms(i0, i1, *rough, l)["mu"][inner], middle[inner])
    assert err_random <= err_blend
    assert err_true < 0.5 * err_blend
    assert err_plain > 1.05 * err_blend


def test_fallback_confidence_follows_the_evidence():
    """c is high where the warps agree and the frames do not, low where warping makes them
    disagree, and 1/2 where nothing differs."""
    from vfi.ops.fusion import motion_confidence

    ones, zeros = torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    good = motion_confidence(zeros, zeros, -ones, ones)  # E_w = 0, E_b = 2
    bad = motion_confidence(-ones, ones, zeros, zeros)  # E_w = 2, E_b = 0
    still = motion_confidence(zeros, zeros, zeros, zeros)
    g = torch.tensor(4.0)
    torch.testing.assert_close(good, torch.sigmoid(g * 2 / 2.01).expand_as(good))
    torch.testing.assert_close(bad, torch.sigmoid(-g * 2 / 2.01).expand_as(bad))
    torch.testing.assert_close(still, torch.full_like(still, 0.5))


def test_calibration_fit_recovers_a_known_scale():
    """Errors drawn as N(0, (3 sigma)^2) with a per-pixel sigma: the fitted scale is 3, and
    the rescaled +-2 sigma band then covers 95.4% of them (the Gaussian value)."""
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(200_000, generator=g) * 0.5 + 0.01
    error = 3.0 * sigma * torch.randn(200_000, generator=g)
    scale = calibration_scale(error.abs(), sigma)
    assert abs(float(scale) - 3.0) < 0.05
    coverage = float((error.abs() <= 2 * scale * sigma).float().mean())
    assert abs(coverage - 0.9545) < 0.005
    # a heavier-tailed error still gets 95% within +-1.96 s sigma, by construction
    laplace = sigma * torch.distributions.Laplace(0.0, 1.0).sample((200_000,))
    s = calibration_scale(laplace.abs(), sigma)
    assert abs(float((laplace.abs() <= 1.96 * s * sigma).float().mean()) - 0.95) < 0.005


def test_calibration_fit_with_a_floor_outside_the_scale():
    """With a floor b the band is +-1.96 sqrt(s^2 sigma^2 + b^2): the fitted s is the smallest
    that covers 95% (found here by bisection on the coverage itself), errors below 1.96 b count
    as covered even where sigma = 0, and b = 0 gives the quantile formula."""
    g = torch.Generator().manual_seed(1)
    n = 100_000
    sigma = torch.rand(n, generator=g) * 0.2
    sigma[: n // 10] = 0  # static pixels: no std of their own
    error = (0.5 * sigma + 0.01) * torch.randn(n, generator=g).abs()
    floor = 0.01

    def covered(s: float) -> float:
        return float((error <= 1.96 * (s**2 * sigma**2 + floor**2).sqrt()).double().mean())

    lo, hi = 1e-4, 1e4
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if covered(mid) < 0.95 else (lo, mid)
    s = float(calibration_scale(error, sigma, floor, coverage=0.95))
    assert s == pytest.approx(hi, rel=1e-3)
    assert covered(s) >= 0.95 > covered(0.99 * s)
    # without the floor the zero-std pixels are left out and s is quantile(error / sigma) / z
    keep = sigma > 0
    want = torch.quantile((error[keep] / sigma[keep]).double(), 0.95) / 1.959964
    assert float(calibration_scale(error, sigma)) == pytest.approx(float(want), rel=1e-5)
    # nothing to fit: NaN
    assert calibration_scale(torch.ones(4), torch.zeros(4)).isnan()
