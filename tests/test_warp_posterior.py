"""The warp-posterior step against the dense Gaussian posterior (issue 3, maths layer)."""

import pytest
import torch

from vfi.diffusion.warp_posterior import (
    adjoint,
    bridge_variance,
    gram_diagonal,
    posterior,
    transition_coefficients,
)
from vfi.ops import intermediate_flows, warp_backward

SHAPE = (1, 1, 6, 7)
N = 42


def _dense(op):
    """The matrix of a linear operator on SHAPE tensors, column j = op(e_j)."""
    eye = torch.eye(N, dtype=torch.float64)
    return torch.stack([op(eye[j].view(SHAPE)).flatten() for j in range(N)], dim=1)


def _warp(flow):
    return lambda x: warp_backward(x, flow)


def _setup(g, integer=False):
    kappa, l_prev, l_k = 1.5, 0.375, 0.5
    f01 = 3 * torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64)
    f10 = 3 * torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64)
    step = (l_k - l_prev) * f01
    if integer:
        step = torch.randint(-2, 3, (1, 2, 6, 7), generator=g).double()
    i0 = torch.rand(SHAPE, generator=g, dtype=torch.float64)
    i1 = torch.rand(SHAPE, generator=g, dtype=torch.float64)
    v0 = torch.rand(SHAPE, generator=g, dtype=torch.float64)
    v1 = torch.rand(SHAPE, generator=g, dtype=torch.float64)

    def mu(l):
        f_t0, f_t1 = intermediate_flows(f01, f10, l)
        p_mat, b_mat = _dense(_warp(f_t0)), _dense(_warp(f_t1))
        z = (1 - l) * v0 + l * v1 + 1e-6
        a, b = ((1 - l) * v0 / z).flatten(), (l * v1 / z).flatten()
        return a * (p_mat @ i0.flatten()) + b * (b_mat @ i1.flatten())

    rho, gamma = transition_coefficients(l_prev, l_k, kappa)
    beta_prev = float(bridge_variance(l_prev, kappa))
    return _warp(step), mu(l_prev), mu(l_k), rho, gamma, beta_prev


def _dense_posterior(s, mu_prev, mu_k, x_k, rho, gamma, beta):
    """Condition the joint of x_{k-1} ~ N(mu_prev, beta I) and
    x_k = mu_k + rho S (x_{k-1} - mu_prev) + N(0, gamma I) on x_k (covariance form)."""
    cov_kk = rho**2 * beta * s @ s.T + gamma * torch.eye(N, dtype=torch.float64)
    cross = beta * rho * s.T
    gain = torch.linalg.solve(cov_kk, cross.T).T
    return mu_prev + gain @ (x_k - mu_k), beta * torch.eye(N, dtype=torch.float64) - gain @ cross.T


def _posterior(case, x_k, mode, **kwargs):
    warp, mu_prev, mu_k, rho, gamma, beta = case
    views = (x_k.view(SHAPE), mu_prev.view(SHAPE), mu_k.view(SHAPE))
    return posterior(*views, warp, rho, gamma, beta, mode=mode, **kwargs)


def test_exact_mode_matches_dense_posterior():
    g = torch.Generator().manual_seed(0)
    case = warp, mu_prev, mu_k, rho, gamma, beta = _setup(g)
    x_k = torch.randn(N, generator=g, dtype=torch.float64)
    want_mean, want_cov = _dense_posterior(_dense(warp), mu_prev, mu_k, x_k, rho, gamma, beta)
    stats = {}
    mean, var = _posterior(case, x_k, "exact", stats=stats)
    assert var is None and stats["residual"] < 1e-10 and 0 < stats["iterations"] <= N
    assert torch.allclose(mean.flatten(), want_mean, atol=1e-5)


def test_diagonal_mode_is_exact_for_integer_shifts():
    g = torch.Generator().manual_seed(1)
    case = warp, mu_prev, mu_k, rho, gamma, beta = _setup(g, integer=True)
    s = _dense(warp)
    gram = s.T @ s
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)))  # S^T S is diagonal
    x_k = torch.randn(N, generator=g, dtype=torch.float64)
    want_mean, want_cov = _dense_posterior(s, mu_prev, mu_k, x_k, rho, gamma, beta)
    mean, var = _posterior(case, x_k, "diagonal")
    assert torch.allclose(mean.flatten(), want_mean, atol=1e-10)
    assert torch.allclose(var.flatten(), torch.diagonal(want_cov), atol=1e-10)
    assert torch.allclose(gram_diagonal(warp, x_k.view(SHAPE)).flatten(), torch.diagonal(gram))


def test_adjoint_by_autograd():
    g = torch.Generator().manual_seed(2)
    flow = 2 * torch.randn(2, 2, 9, 11, generator=g, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    warp = _warp(flow)
    assert abs((warp(x) * y).sum() - (x * adjoint(warp, y)).sum()) < 1e-10


def test_degenerate_steps():
    x = torch.randn(SHAPE, dtype=torch.float64)
    mu_prev = torch.randn(SHAPE, dtype=torch.float64)
    for mode in ("exact", "diagonal"):
        mean, var = posterior(x, mu_prev, x, lambda v: v, 0.5, 0.1, 0.0, mode=mode)
        assert torch.equal(mean, mu_prev) and torch.all(var == 0)  # k = 1
        mean, var = posterior(x, mu_prev, x, lambda v: v, 0.0, 0.0, 0.3, mode=mode)
        assert torch.equal(mean, mu_prev) and torch.allclose(var, torch.full_like(x, 0.3))


@pytest.mark.parametrize("l_prev,l_k", [(0.0, 0.25), (0.5, 0.75), (0.75, 1.0)])
def test_zero_motion_is_the_brownian_bridge(l_prev, l_k):
    """With S = I, rho and gamma make the prior marginals consistent:
    beta_k = rho^2 beta_{k-1} + gamma."""
    kappa = 2.0
    rho, gamma = transition_coefficients(l_prev, l_k, kappa)
    beta_prev, beta_k = bridge_variance(l_prev, kappa), bridge_variance(l_k, kappa)
    assert abs(rho**2 * beta_prev + gamma - beta_k) < 1e-12


def test_warp_gram_diagonal_matches_probing():
    from vfi.ops import warp_gram_diagonal

    g = torch.Generator().manual_seed(3)
    flow = 2.5 * torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64)
    like = torch.zeros(2, 1, 6, 7, dtype=torch.float64)
    probed = gram_diagonal(lambda x: warp_backward(x, flow), like)
    assert torch.allclose(warp_gram_diagonal(flow), probed, atol=1e-12)


def _blend_bridge(i0, i1, times, kappa=1.0, noise=False, generator=None, denoised=False):
    """Zero flow, v0 = v1 = 1: mu_k is the normalised blend and S_k = I."""
    from vfi.diffusion.warp_posterior import reverse_bridge

    def prior_mean(k):
        l = float(times[k])
        return ((1 - l) * i0 + l * i1) / ((1 - l) + l + 1e-6)

    return reverse_bridge(
        i0,
        i1,
        times,
        prior_mean,
        lambda k: lambda x: x,
        kappa,
        gram_diag=lambda k: torch.ones_like(i0),
        noise=noise,
        generator=generator,
        denoised=denoised,
    )


def test_denoised_path_is_the_posterior_mean_of_the_noisy_states():
    """With S = I the posterior mean is the Brownian bridge's closed form
    mu_{k-1} + (l_{k-1} / l_k) (x_k - mu_k): the denoised estimates of one seeded pass are
    that mean of the same pass's noisy states, which the chain goes on from."""
    from vfi.diffusion.warp_posterior import time_grid

    g = torch.Generator().manual_seed(5)
    i0 = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    i1 = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    times = time_grid(4, [0.3])
    states = _blend_bridge(i0, i1, times, 0.5, True, torch.Generator().manual_seed(9))
    estimates = _blend_bridge(i0, i1, times, 0.5, True, torch.Generator().manual_seed(9), True)
    assert torch.equal(estimates[0], i0) and torch.equal(estimates[-1], i1)

    def mu(l):
        return ((1 - l) * i0 + l * i1) / (1 + 1e-6)

    for k in range(2, len(times)):
        l_prev, l_k = float(times[k - 1]), float(times[k])
        closed = mu(l_prev) + l_prev / l_k * (states[k] - (mu(l_k) if k < len(times) - 1 else i1))
        torch.testing.assert_close(estimates[k - 1], closed, rtol=0, atol=1e-9)
        assert (estimates[k - 1] - states[k - 1]).abs().max() > 1e-3  # the noise is left out


def test_time_grid_inserts_targets():
    from vfi.diffusion.warp_posterior import time_grid

    grid = time_grid(4, [0.3, 0.5])
    assert torch.allclose(grid, torch.tensor([0, 0.25, 0.3, 0.5, 0.75, 1], dtype=torch.float64))


def test_bridge_passes_through_endpoints_and_is_the_blend_without_noise():
    from vfi.diffusion.warp_posterior import time_grid

    g = torch.Generator().manual_seed(4)
    i0 = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    i1 = torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64)
    times = time_grid(8, [0.3])
    path = _blend_bridge(i0, i1, times, noise=True, generator=g)
    assert torch.equal(path[0], i0) and torch.equal(path[-1], i1)
    path = _blend_bridge(i0, i1, times, noise=False)
    for x, l in zip(path, times, strict=True):
        assert torch.allclose(x, (1 - l) * i0 + l * i1, atol=1e-5)


def test_bridge_marginal_variance_monte_carlo():
    from vfi.diffusion.warp_posterior import time_grid

    g = torch.Generator().manual_seed(5)
    i0 = torch.zeros(1, 1, 200, 200, dtype=torch.float64)
    i1 = torch.ones_like(i0)
    kappa, times = 1.3, time_grid(6)
    path = _blend_bridge(i0, i1, times, kappa=kappa, noise=True, generator=g)
    for k in range(1, 6):
        beta = bridge_variance(float(times[k]), kappa)
        assert abs(path[k].var().item() / beta - 1) < 0.05
        assert abs(path[k].mean().item() - float(times[k])) < 5 * (beta / i0.numel()) ** 0.5


@pytest.mark.parametrize("mode", ["exact", "diagonal"])
def test_per_item_coefficients_match_item_by_item(mode):
    """Tensor coefficients [B, 1, 1, 1] (one step per item, degenerate ones included) give
    what each item gives on its own with float coefficients."""
    g = torch.Generator().manual_seed(5)
    kappa = 0.7
    steps = [(0.25, 0.5), (0.0, 0.125), (0.875, 1.0), (0.5, 0.625)]  # beta_0 = 0; rho = 0
    b = len(steps)
    flow = 2 * torch.randn(b, 2, 6, 7, generator=g, dtype=torch.float64)
    x_k, mu_prev, mu_k = (torch.randn(b, 3, 6, 7, generator=g, dtype=torch.float64) for _ in "abc")
    lp = torch.tensor([s[0] for s in steps], dtype=torch.float64).view(-1, 1, 1, 1)
    lk = torch.tensor([s[1] for s in steps], dtype=torch.float64).view(-1, 1, 1, 1)
    rho, gamma = transition_coefficients(lp, lk, kappa)
    mean, var = posterior(
        x_k, mu_prev, mu_k, _warp(flow), rho, gamma, bridge_variance(lp, kappa), mode, tol=1e-13
    )
    for i, (l_prev, l_k) in enumerate(steps):
        r, gm = transition_coefficients(l_prev, l_k, kappa)
        m_i, v_i = posterior(
            x_k[i : i + 1],
            mu_prev[i : i + 1],
            mu_k[i : i + 1],
            _warp(flow[i : i + 1]),
            r,
            gm,
            bridge_variance(l_prev, kappa),
            mode,
            tol=1e-13,
        )
        torch.testing.assert_close(mean[i : i + 1], m_i, rtol=0, atol=1e-9)
        if mode == "diagonal":
            torch.testing.assert_close(var[i : i + 1], v_i, rtol=0, atol=1e-12)
    assert torch.equal(mean[1], mu_prev[1]) and torch.equal(mean[2], mu_prev[2])


def test_exact_mode_solves_in_float32_under_bf16_autocast():
    """bf16 inputs under bf16 autocast: the conjugate-gradient solve runs in float32, so the
    mean matches the dense float64 posterior of the same bf16 inputs up to bf16 rounding of
    the output (mean relative error 0.0022 here, about 2^-9; a solve in bf16 gives 0.0046);
    the mean comes back in bf16."""
    g = torch.Generator().manual_seed(0)
    warp, mu_prev, mu_k, rho, gamma, beta = _setup(g)
    x_k = torch.randn(N, generator=g, dtype=torch.float64)
    low = [t.to(torch.bfloat16) for t in (x_k, mu_prev, mu_k)]
    want, _ = _dense_posterior(
        _dense(warp), low[1].double(), low[2].double(), low[0].double(), rho, gamma, beta
    )
    stats = {}  # the case's float64 warp, returning its input's dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean, _ = posterior(
            *(t.view(SHAPE) for t in low), lambda x: warp(x.double()).to(x.dtype),
            rho, gamma, beta, mode="exact", tol=1e-5, stats=stats,
        )  # fmt: skip
    assert mean.dtype == torch.bfloat16 and stats["iterations"] > 0
    error = (mean.detach().double().flatten() - want).abs().mean() / want.abs().mean()
    assert error < 0.0035


@pytest.mark.parametrize("noise", [False, True])
def test_step_from_the_endpoint_asks_no_warp(noise):
    """x_T = I1 = mu_T with rho_T = gamma_T = 0: the first reverse step's posterior is the
    prior's N(mu_{T-1}, beta_{T-1}), which needs no S_T, so the pass never asks for it (the
    model then builds no terms at l = 1). Checked against that closed form, with the
    generator's first draw."""
    from vfi.diffusion.warp_posterior import reverse_bridge, time_grid

    g = torch.Generator().manual_seed(6)
    i0, i1 = (torch.rand(2, 3, 5, 6, generator=g, dtype=torch.float64) for _ in range(2))
    times, kappa, asked = time_grid(2, [0.25, 0.75]), 0.5, []

    def one_step_warp(k):
        asked.append(k)
        return lambda x: warp_backward(x, torch.full_like(i0[:, :2], 0.5))

    def prior_mean(k):
        l = float(times[k])
        return (1 - l) * i0 + l * i1

    path = reverse_bridge(
        i0, i1, times, prior_mean, one_step_warp, kappa,
        noise=noise, generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    assert asked == [3, 2]  # S_4 never asked (nor S_1: x_0 = I0)
    z = torch.randn(i0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    beta = bridge_variance(0.75, kappa)
    expected = prior_mean(3) + (beta**0.5 * z if noise else 0)
    torch.testing.assert_close(path[3], expected, rtol=0, atol=1e-12)
