"""Warping and splatting against exact references."""

import pytest
import torch

from vfi.ops import intermediate_flows, pad_to_multiple, softmax_splat, splat_sum, warp_backward


def _const_flow(b, h, w, dx, dy):
    flow = torch.zeros(b, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


@pytest.mark.parametrize("dx,dy", [(3, 0), (0, -2), (2, 5), (-4, -1)])
def test_integer_warp_equals_roll_inside(dx, dy):
    x = torch.randn(2, 3, 20, 24)
    out = warp_backward(x, _const_flow(2, 20, 24, dx, dy))
    rolled = torch.roll(x, shifts=(-dy, -dx), dims=(2, 3))
    ys = slice(max(0, -dy), 20 - max(0, dy))
    xs = slice(max(0, -dx), 24 - max(0, dx))
    assert torch.allclose(out[..., ys, xs], rolled[..., ys, xs], atol=1e-5)


def test_warp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="flow"):
        warp_backward(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_splat_is_the_adjoint_of_backward_warp():
    """<warp(x, f), y> = <x, splat(y, f)> for zero padding: splatting is warping's adjoint."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 15, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 12, 15, generator=g, dtype=torch.float64)
    f = 3 * torch.randn(2, 2, 12, 15, generator=g, dtype=torch.float64)
    lhs = (warp_backward(x, f, padding_mode="zeros") * y).sum()
    rhs = (x * splat_sum(y, f)).sum()
    assert torch.allclose(lhs, rhs, atol=1e-9)


def test_splat_conserves_mass_with_equal_weights():
    g = torch.Generator().manual_seed(1)
    h, w = 16, 16
    x = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    flow = torch.rand(1, 2, h, w, generator=g, dtype=torch.float64) * 4 - 2
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = (
        (xs + flow[0, 0] >= 0)
        & (xs + flow[0, 0] <= w - 1)
        & (ys + flow[0, 1] >= 0)
        & (ys + flow[0, 1] <= h - 1)
    )
    x = x * inside  # only pixels that land inside carry mass
    assert torch.allclose(splat_sum(x, flow).sum(), x.sum(), atol=1e-9)
    # softmax splatting with one shared importance value: total weight is conserved too, and
    # its output is the summation splat divided by the splatted weights.
    metric = torch.zeros(1, 1, h, w, dtype=torch.float64)
    assert torch.allclose(
        splat_sum(inside[None, None].double(), flow).sum(), inside.double().sum(), atol=1e-9
    )
    weights = splat_sum(torch.ones_like(metric), flow)
    out = softmax_splat(x, flow, metric, eps=0.0)
    covered = weights[0, 0] > 1e-6
    assert torch.allclose(out[..., covered], (splat_sum(x, flow) / weights)[..., covered])


def test_softmax_splat_integer_shift_moves_pixels():
    """Each pixel lands alone, so out = x w / (w + eps) with w = exp(Z - max Z): the pixel
    itself up to the eps in the normaliser."""
    g = torch.Generator().manual_seed(0)
    x, metric = torch.randn(1, 3, 10, 10, generator=g), torch.randn(1, 1, 10, 10, generator=g)
    out = softmax_splat(x, _const_flow(1, 10, 10, 2, 1), metric, eps=1e-7)
    w = (metric - metric.max()).exp()
    expected = (x * w / (w + 1e-7))[..., :-1, :-2]
    torch.testing.assert_close(out[..., 1:, 2:], expected, rtol=1e-6, atol=1e-7)
    assert torch.allclose(out[..., 1:, 2:], x[..., :-1, :-2], rtol=1e-4)
    assert torch.all(out[..., 0, :] == 0) and torch.all(out[..., :, :2] == 0)


def test_softmax_splat_prefers_higher_importance():
    x = torch.zeros(1, 1, 1, 4)
    x[..., 0], x[..., 1] = 1.0, 5.0
    flow = torch.zeros(1, 2, 1, 4)
    flow[..., 0, 0, 0] = 1.0  # pixel 0 lands on pixel 1
    metric = torch.zeros(1, 1, 1, 4)
    metric[..., 1] = 10.0
    out = softmax_splat(x, flow, metric)
    assert abs(out[0, 0, 0, 1].item() - 5.0) < 1e-3


def test_intermediate_flows_linear_motion():
    v = torch.randn(2, 2, 5, 6)
    for t in (0.25, 0.5, 0.8):
        f_t0, f_t1 = intermediate_flows(v, -v, t)
        assert torch.allclose(f_t0, -t * v, atol=1e-6)
        assert torch.allclose(f_t1, (1 - t) * v, atol=1e-6)
    f_t0, f_t1 = intermediate_flows(v, -v, torch.tensor([0.2, 0.6]))
    assert torch.allclose(f_t0[1], -0.6 * v[1], atol=1e-6)


def test_pad_to_multiple():
    x = torch.randn(1, 3, 37, 50)
    padded, size = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (48, 64) and size == (37, 50)
    assert torch.equal(padded[..., :37, :50], x)
    assert pad_to_multiple(padded, 16)[0] is padded


def test_bicubic_warp_matches_opencv_remap():
    """mode="bicubic" is Keys' cubic convolution (a = -0.75), as OpenCV's INTER_CUBIC: on
    displacements that are multiples of 1/32 px (OpenCV's interpolation table) the two agree
    away from the border; the bilinear warp of the same texture differs far more."""
    import cv2

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 48, generator=g)
    flow = torch.randint(-64, 65, (1, 2, 40, 48), generator=g).float() / 32
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    map_x, map_y = (xs + flow[0, 0]).numpy(), (ys + flow[0, 1]).numpy()
    image = x[0].permute(1, 2, 0).numpy()
    want = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    want = torch.from_numpy(want).permute(2, 0, 1)[None]
    inner = (..., slice(4, -4), slice(4, -4))
    got = warp_backward(x, flow, mode="bicubic")
    assert (got - want)[inner].abs().max() < 1e-4
    assert (warp_backward(x, flow) - want)[inner].abs().max() > 0.05


def test_explicit_transpose_is_the_adjoint_of_the_border_warp():
    """<S x, y> = <x, S^T y> in float64 for flows that leave the frame and cross its borders,
    and S^T equals autograd's vector-Jacobian product of grid_sample."""
    from vfi.diffusion.warp_posterior import adjoint
    from vfi.ops import BackwardWarp, warp_backward_transpose

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 12, 17, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 12, 17, generator=g, dtype=torch.float64)
    flow = torch.randn(2, 2, 12, 17, generator=g, dtype=torch.float64) * 9  # many outside
    sx = warp_backward(x, flow)
    sty = warp_backward_transpose(y, flow)
    assert abs(float((sx * y).sum() - (x * sty).sum())) < 1e-10 * float((sx * y).abs().sum())
    via_autograd = adjoint(lambda v: warp_backward(v, flow), y)
    torch.testing.assert_close(adjoint(BackwardWarp(flow), y), via_autograd, rtol=0, atol=1e-12)


def test_non_finite_flow_samples_outside_the_frame():
    """A diverged flow (NaN, +-inf) is a position outside the frame, at (-2, -2): the border
    warp returns the corner pixel there, the splats drop its mass, and the backward passes run
    (cast to an index, NaN would be out of range)."""
    from vfi.ops.warp import warp_backward_transpose, warp_gram_diagonal

    torch.manual_seed(0)
    x = torch.rand(1, 3, 6, 7, requires_grad=True)
    flow = torch.zeros(1, 2, 6, 7)
    bad = [(1, 2), (3, 4), (5, 6)]
    for (i, j), value in zip(bad, (float("nan"), float("inf"), -float("inf")), strict=True):
        flow[0, :, i, j] = value
    flow.requires_grad_()
    out = warp_backward(x, flow)
    for i, j in bad:
        torch.testing.assert_close(out[0, :, i, j], x[0, :, 0, 0])
    splat = splat_sum(x, flow)
    assert torch.isfinite(splat).all()
    torch.testing.assert_close(splat.sum(), x.sum() - sum(x[0, :, i, j].sum() for i, j in bad))
    transposed = warp_backward_transpose(x, flow)
    assert torch.isfinite(transposed).all() and torch.isfinite(warp_gram_diagonal(flow)).all()
    (out.sum() + splat.sum() + transposed.sum()).backward()
    assert torch.isfinite(x.grad).all()
