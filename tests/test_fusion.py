"""vfi.ops.fusion.gradient_energy against kornia's Sobel and a closed form; local_departure
against scipy's Gaussian filter and the closed form of a linear field."""

import kornia
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vfi.ops import linear_motion_frame, warp_backward
from vfi.ops.fusion import gradient_energy, local_departure, lowpass_correction


def test_gradient_energy_equals_kornias_sobel():
    """Random images of odd sizes, borders included, in float32 and float64."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(2, 3, 7, 11, generator=g, dtype=dtype)
        want = kornia.filters.spatial_gradient(x).pow(2).sum(2)
        torch.testing.assert_close(gradient_energy(x), want)


def test_gradient_energy_of_a_ramp_is_its_slope_squared():
    """x = a u + b v has |grad x|^2 = a^2 + b^2 at every interior pixel; at the replicated
    border the kernel sees half the slope across it."""
    v, u = torch.meshgrid(torch.arange(6.0), torch.arange(9.0), indexing="ij")
    energy = gradient_energy((0.3 * u - 0.4 * v)[None, None])[0, 0]
    torch.testing.assert_close(energy[1:-1, 1:-1], torch.full((4, 7), 0.25))
    torch.testing.assert_close(energy[3, 0], torch.tensor(0.15**2 + 0.16))


@pytest.mark.parametrize("sigma", [1.0, 3.0, 2.2])
def test_local_departure_equals_scipys_gaussian_filter(sigma):
    """x - G_sigma * x against scipy.ndimage.gaussian_filter per channel, with the same
    truncation (2 sigma, rounded up) and nearest-pixel (replicated) borders."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 23, 31, generator=g, dtype=torch.float64)
    radius = int(np.ceil(2 * sigma))
    want = x.numpy() - np.stack(
        [
            [gaussian_filter(c, sigma, mode="nearest", truncate=radius / sigma) for c in item]
            for item in x.numpy()
        ]
    )
    torch.testing.assert_close(local_departure(x, sigma), torch.from_numpy(want))


def test_a_linear_field_departs_from_its_local_mean_only_at_the_border():
    """A flow linear in x, y (a zoom) is its own Gaussian mean away from the border; a
    uniform one everywhere."""
    v, u = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    zoom = torch.stack([0.1 * u, -0.2 * v])[None]
    out = local_departure(zoom, 2.0)
    torch.testing.assert_close(out[..., 4:-4, 4:-4], torch.zeros(1, 2, 12, 16))
    assert float(out[:, 0, :, 0].abs().min()) > 0.05  # the replicated border bends it there
    uniform = torch.tensor([3.0, -4.0]).view(1, 2, 1, 1).expand(1, 2, 9, 9)
    torch.testing.assert_close(local_departure(uniform, 3.0), torch.zeros(1, 2, 9, 9))
    with pytest.raises(ValueError, match="sigma"):
        local_departure(uniform, 0.0)


def scipy_gaussian(x: torch.Tensor, sigma: float) -> np.ndarray:
    """G_sigma * x per channel with scipy, truncated at ceil(2 sigma) px, nearest borders."""
    radius = int(np.ceil(2 * sigma))
    return np.stack(
        [
            [gaussian_filter(c, sigma, mode="nearest", truncate=radius / sigma) for c in item]
            for item in x.numpy()
        ]
    )


def test_lowpass_correction_adds_the_blurred_capped_difference():
    """x + w G_sigma * clamp(D - x, -c, c), against scipy; a cap of 0 or a weight of 0 leave x
    as it is, and a difference inside the cap that is constant moves x by w times it."""
    g = torch.Generator().manual_seed(2)
    frame, other = (torch.rand(2, 3, 19, 27, generator=g, dtype=torch.float64) for _ in range(2))
    w, sigma, cap = 0.3, 2.0, 0.1
    diff = np.clip(other.numpy() - frame.numpy(), -cap, cap)
    want = frame.numpy() + w * scipy_gaussian(torch.from_numpy(diff), sigma)
    got = lowpass_correction(frame, other, w, sigma, cap)
    torch.testing.assert_close(got, torch.from_numpy(want))
    assert float((got - frame).abs().max()) <= w * cap + 1e-12
    torch.testing.assert_close(lowpass_correction(frame, other, w, sigma, 0.0), frame)
    torch.testing.assert_close(lowpass_correction(frame, other, 0.0, sigma, cap), frame)
    torch.testing.assert_close(
        lowpass_correction(frame, frame + 0.05, w, 3.0, cap), frame + w * 0.05
    )
    with pytest.raises(ValueError, match="differ"):
        lowpass_correction(frame, other[:, :2], w, sigma, cap)


def test_linear_motion_frame_blends_the_warps_at_t():
    """Zero flows give the blend (1 - t) I0 + t I1; with F_0->1 = -F_1->0 = (4, 0) px the frame
    at t takes I0 from F_t->0 = -4 t px and I1 from F_t->1 = 4 (1 - t) px (Super SloMo's
    linear motion), for a time per item."""
    g = torch.Generator().manual_seed(3)
    i0, i1 = (torch.rand(2, 3, 12, 20, generator=g) for _ in range(2))
    t = torch.tensor([0.25, 0.5])
    zero = torch.zeros(2, 2, 12, 20)
    want = (1 - t.view(-1, 1, 1, 1)) * i0 + t.view(-1, 1, 1, 1) * i1
    torch.testing.assert_close(linear_motion_frame(i0, i1, zero, zero, t), want)
    f01 = torch.zeros(2, 2, 12, 20)
    f01[:, 0] = 4.0
    got = linear_motion_frame(i0, i1, f01, -f01, 0.25)
    shift = torch.zeros(2, 2, 12, 20)
    shift[:, 0] = 1.0
    want = 0.75 * warp_backward(i0, -shift) + 0.25 * warp_backward(i1, 3 * shift)
    torch.testing.assert_close(got, want)


def test_lowpass_correction_with_welsch_influence_ignores_large_disagreements():
    """x + w G_sigma * (d exp(-d^2 / 2 c^2)), d = D - x, against scipy; a disagreement of many
    c moves x by (almost) nothing, where the clamp moves it by w c, and a small one as the
    clamp does."""
    g = torch.Generator().manual_seed(3)
    frame, other = (torch.rand(2, 3, 19, 27, generator=g, dtype=torch.float64) for _ in range(2))
    w, sigma, cap = 0.6, 2.0, 0.1
    d = other.numpy() - frame.numpy()
    want = frame.numpy() + w * scipy_gaussian(
        torch.from_numpy(d * np.exp(-0.5 * (d / cap) ** 2)), sigma
    )
    got = lowpass_correction(frame, other, w, sigma, cap, "welsch")
    torch.testing.assert_close(got, torch.from_numpy(want))
    far = lowpass_correction(frame, frame + 10 * cap, w, sigma, cap, "welsch")
    torch.testing.assert_close(far, frame, atol=1e-20, rtol=0)
    clamped = lowpass_correction(frame, frame + 10 * cap, w, sigma, cap)
    torch.testing.assert_close(clamped, frame + w * cap)
    near = lowpass_correction(frame, frame + 1e-4, w, sigma, cap, "welsch")
    torch.testing.assert_close(near, frame + w * 1e-4 * np.exp(-0.5 * 1e-6), rtol=0, atol=1e-15)
    torch.testing.assert_close(lowpass_correction(frame, other, w, sigma, 0.0, "welsch"), frame)
    with pytest.raises(ValueError, match="influence"):
        lowpass_correction(frame, other, w, sigma, cap, "huber")
