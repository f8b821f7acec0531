"""vfi.diffusion.resshift against independent computations."""

import math

import pytest
import torch

from vfi.diffusion import resshift as rs

KAPPA = 2.0


def test_schedule_published_endpoints():
    etas = rs.eta_schedule(15, 0.3, 2.0, 0.04, 0.99)
    assert etas.dtype == torch.float64 and etas.shape == (15,)
    assert math.isclose(etas[0].sqrt().item(), 0.02, rel_tol=1e-12)
    assert math.isclose(etas[-1].sqrt().item(), 0.99, rel_tol=1e-12)
    assert bool((etas[1:] > etas[:-1]).all())


def test_schedule_closed_form_middle():
    t, T, p = 8, 15, 0.3
    b0 = math.exp(math.log(0.99 / 0.02) / (T - 1))
    expected = (0.02 * b0 ** (((t - 1) / (T - 1)) ** p * (T - 1))) ** 2
    assert math.isclose(rs.eta_schedule()[t - 1].item(), expected, rel_tol=1e-12)


def _chain_joint(etas, x0, y):
    """Dense mean and covariance of (x_1..x_T) for scalar x0, y built from the Markov
    transitions x_k = x_{k-1} + alpha_k (y - x0) + kappa sqrt(alpha_k) n_k, x_0 = x0."""
    alphas = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), etas]))
    T = len(etas)
    L = torch.tril(torch.ones(T, T, dtype=torch.float64)) * (KAPPA * alphas.sqrt())[None, :]
    mean = x0 + torch.cumsum(alphas, 0) * (y - x0)
    return mean, L @ L.T


@pytest.mark.parametrize("t", [1, 2, 7, 15])
def test_posterior_matches_gaussian_conditioning(t):
    etas = rs.eta_schedule()
    x0, y, xt = 0.3, -0.5, 0.1
    mean, cov = _chain_joint(etas, x0, y)
    if t == 1:
        want_mean, want_var = torch.tensor(x0, dtype=torch.float64), torch.tensor(0.0)
    else:
        a, b = t - 2, t - 1  # indices of x_{t-1}, x_t
        want_mean = mean[a] + cov[a, b] / cov[b, b] * (xt - mean[b])
        want_var = cov[a, a] - cov[a, b] ** 2 / cov[b, b]
    got_mean, got_var = rs.posterior_mean_var(
        torch.full((1, 1, 1, 1), xt, dtype=torch.float64),
        torch.full((1, 1, 1, 1), x0, dtype=torch.float64),
        torch.tensor([t]),
        etas,
        KAPPA,
    )
    assert torch.allclose(got_mean.flatten()[0], want_mean, atol=1e-12)
    assert torch.allclose(got_var.flatten()[0].double(), want_var.double(), atol=1e-12)


def test_q_sample_is_the_chains_marginal():
    """q_sample's x_t (its mean with zero noise; its std per unit noise) against the marginal
    of the dense Markov chain at every t."""
    etas = rs.eta_schedule()
    x0, y = 0.25, -0.75
    mean, cov = _chain_joint(etas, x0, y)
    t = torch.arange(1, len(etas) + 1)
    x0s, ys = (torch.full((len(t), 1, 1, 1), v, dtype=torch.float64) for v in (x0, y))
    at_zero = rs.q_sample(x0s, ys, t, etas, KAPPA, torch.zeros_like(x0s)).flatten()
    at_one = rs.q_sample(x0s, ys, t, etas, KAPPA, torch.ones_like(x0s)).flatten()
    torch.testing.assert_close(at_zero, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(at_one - at_zero, torch.diagonal(cov).sqrt(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [1, 8, 15])
def test_q_sample_monte_carlo(t):
    etas = rs.eta_schedule()
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x0 = torch.full((n, 1, 1, 1), 0.4, dtype=torch.float64)
    y = torch.full_like(x0, -0.2)
    xt = rs.q_sample(
        x0,
        y,
        torch.full((n,), t),
        etas,
        KAPPA,
        torch.randn(x0.shape, generator=g, dtype=torch.float64),
    )
    eta = etas[t - 1].item()
    mean, var = 0.4 + eta * (-0.6), KAPPA**2 * eta
    assert abs(xt.mean().item() - mean) < 5 * math.sqrt(var / n)
    assert abs(xt.var().item() / var - 1) < 5 * math.sqrt(2 / n)


def test_reverse_chain_with_oracle_reproduces_forward_marginals():
    """With x0_hat = x0, the reverse chain's x_t must follow q(x_t | x0, y) at every t and end
    exactly at x0."""
    etas = rs.eta_schedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((1, 1, 200, 200), 0.3, dtype=torch.float64)
    y = torch.full_like(x0, -0.4)
    seen = {}

    def oracle(x, t, step):
        assert bool((t == step).all())  # the host step names the device steps t
        seen[step] = x.clone()
        return x0

    out = rs.sample_loop(oracle, y, etas, KAPPA, generator=g)
    assert torch.equal(out, x0)
    n = x0.numel()
    for t, xt in seen.items():
        eta = etas[t - 1].item()
        mean, var = 0.3 + eta * (-0.7), KAPPA**2 * eta
        assert abs(xt.mean().item() - mean) < 5 * math.sqrt(var / n)
        assert abs(xt.var().item() / var - 1) < 5 * math.sqrt(2 / n)


def test_scale_input():
    etas = rs.eta_schedule()
    x = torch.ones(2, 1, 1, 1)
    out = rs.scale_input(x, torch.tensor([1, 15]), etas, KAPPA)
    want = 1 / torch.sqrt(KAPPA**2 * etas[[0, 14]] + 1)
    assert torch.allclose(out.flatten().double(), want, atol=1e-7)
