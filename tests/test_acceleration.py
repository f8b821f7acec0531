"""Quadratic motion from the outer neighbours (vfi.ops.acceleration) and the mixed warp kernel:
the offset against the kinematics, the measured acceleration against a known one (frames
moved by scipy's spline shift), and the kernel against its two parts."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift

from vfi.ops import warp_backward
from vfi.ops.acceleration import acceleration_field, quadratic_offset
from vfi.ops.dis import DISFlow


def test_quadratic_offset_puts_a_point_on_its_quadratic_path():
    """x(s) = v s + a s^2 / 2 has F_0->1 = v + a / 2; at time t it lies at t F_0->1 + d(t)."""
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(2, 3, 2, 4, 5, generator=g)
    t = torch.tensor([0.25, 0.5, 0.8])
    linear = t.view(-1, 1, 1, 1) * (v + a / 2)
    true = t.view(-1, 1, 1, 1) * v + a * t.view(-1, 1, 1, 1) ** 2 / 2
    torch.testing.assert_close(linear + quadratic_offset(a, t), true)
    # from I1's side: y(s) about s = 1, F_1->0 = -v1 + a / 2, the same offset at t
    v1 = v + a  # the velocity at s = 1
    from_i1 = (1 - t.view(-1, 1, 1, 1)) * (-v1 + a / 2)
    true1 = -(1 - t.view(-1, 1, 1, 1)) * v1 + a * (1 - t.view(-1, 1, 1, 1)) ** 2 / 2
    torch.testing.assert_close(from_i1 + quadratic_offset(a, t), true1)
    with pytest.raises(ValueError, match="acceleration"):
        quadratic_offset(torch.zeros(1, 3, 4, 4), 0.5)


def accelerating(size: tuple[int, int], v, a, seed: int = 0) -> list[torch.Tensor]:
    """I_-1, I0, I1, I2 [1, 3, H, W] in [-1, 1]: a smooth texture whose content sits at
    x(s) = v s + a s^2 / 2 px (x, y) at s = -1, 0, 1, 2 (scipy's cubic spline shift)."""
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.standard_normal((3, *size)), (0, 2.5, 2.5))
    tex = tex / np.abs(tex).max() * 0.8
    frames = []
    for s in (-1, 0, 1, 2):
        dx, dy = (v[k] * s + a[k] * s * s / 2 for k in (0, 1))
        moved = np.stack([shift(c, (dy, dx), order=3, mode="reflect") for c in tex])
        frames.append(torch.from_numpy(moved).float()[None])
    return frames


@pytest.mark.parametrize("scale", [1, 2])
def test_acceleration_field_measures_a_known_acceleration(scale):
    """Inside the frame the field is the acceleration the frames were made with, at the
    frames' own size (short side 112) and above the working size (224: DIS on copies at 180
    px, the field scaled back)."""
    v, a = (2.0 * scale, -1.0 * scale), (1.6 * scale, 0.8 * scale)
    frames = accelerating((112 * scale, 144 * scale), v, a)
    field = acceleration_field(*frames, DISFlow("medium"), speed=None)
    m = 16 * scale
    inner = field[0, :, m:-m, m:-m].flatten(1).median(1).values
    torch.testing.assert_close(inner, torch.tensor(a), rtol=0, atol=0.25 * scale)
    # weighted by the speed on the copies: (|v| + |v + a|) / 2, the speeds at I0 and I1
    gated = acceleration_field(*frames, DISFlow("medium"), speed=4.0)[0, :, m:-m, m:-m]
    working = min(1.0, 180 / (112 * scale))  # the copies' size over the frames'
    u = (np.hypot(*v) + np.hypot(v[0] + a[0], v[1] + a[1])) / 2 * working
    ratio = gated.flatten(1).median(1).values / inner
    torch.testing.assert_close(
        ratio, torch.full((2,), float(np.exp(-(u**2) / 32))), rtol=0, atol=0.05
    )


def test_an_item_without_both_neighbours_has_no_acceleration():
    """A clip's end or a cut gives I0 (or I1) again as the neighbour: that item's field is 0."""
    frames = accelerating((64, 80), (1.0, 0.5), (1.2, -0.8))
    before, i0, i1, after = (torch.cat([x, x]) for x in frames)
    before[1] = i0[1]
    field = acceleration_field(before, i0, i1, after, DISFlow("medium"))
    assert float(field[0].abs().mean()) > 0.3
    assert torch.equal(field[1], torch.zeros_like(field[1]))
    with pytest.raises(ValueError, match="four"):
        acceleration_field(before[:1], i0, i1, after, DISFlow("medium"))


def test_mixed_warp_is_the_mean_of_bilinear_and_bicubic():
    """mode="mixed": (bilinear + bicubic) / 2; a whole-pixel move is exact in all three."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 20, 24, generator=g)
    flow = torch.rand(2, 2, 20, 24, generator=g) * 3 - 1.5
    want = (warp_backward(x, flow, mode="bilinear") + warp_backward(x, flow, mode="bicubic")) / 2
    torch.testing.assert_close(warp_backward(x, flow, mode="mixed"), want)
    whole = torch.zeros_like(flow)
    whole[:, 0] = 2.0  # out[p] = x[p + 2] along x
    moved = warp_backward(x, whole, mode="mixed")
    torch.testing.assert_close(moved[..., :-2], x[..., 2:])
