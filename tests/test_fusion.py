"""vfi.ops.fusion.gradient_energy against kornia's Sobel and a closed form."""

import kornia
import torch

from vfi.ops.fusion import gradient_energy


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
