"""vfi.ops.fusion.gradient_energy against kornia's Sobel and a closed form; local_departure
against scipy's Gaussian filter and the closed form of a linear field."""

import kornia
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vfi.ops.fusion import gradient_energy, local_departure


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
