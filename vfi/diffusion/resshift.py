"""ResShift-style residual diffusion (Yue et al., 2023), written one formula per function.

The chain shifts the residual ``e = y - x_0`` between the target frame ``x_0`` and the prior
``y``. Steps are indexed ``t = 1..T``; ``etas`` is the float64 tensor ``[eta_1, ..., eta_T]``
returned by :func:`eta_schedule` and ``eta_0 = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def eta_schedule(
    num_steps: int = 15,
    power: float = 0.3,
    kappa: float = 2.0,
    min_noise_level: float = 0.04,
    etas_end: float = 0.99,
) -> Tensor:
    """ResShift's "exponential" schedule, float64 ``[T]`` holding ``eta_1..eta_T``.

    sqrt_eta_1 = min(min_noise_level / kappa, min_noise_level)
    b0 = exp(ln(etas_end / sqrt_eta_1) / (T - 1))
    sqrt_eta_t = sqrt_eta_1 * b0 ** (((t - 1) / (T - 1)) ** p * (T - 1)),  t = 1..T
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    sqrt_eta_1 = min(min_noise_level / kappa, min_noise_level)
    b0 = math.exp(math.log(etas_end / sqrt_eta_1) / (num_steps - 1))
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    exponent = ((t - 1) / (num_steps - 1)) ** power * (num_steps - 1)
    return (sqrt_eta_1 * b0**exponent) ** 2


def _at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t - 1]`` with ``values[-1] = 0`` (i.e. eta_0), broadcast to ``like`` [B, ...]."""
    padded = torch.cat([values.new_zeros(1), values])
    out = padded.to(like.device)[t.long()].to(like.dtype)
    return out.view(-1, *([1] * (like.dim() - 1)))


def eta_at(etas: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """eta_t for integer steps ``t`` [B] (``t = 0`` gives 0), shaped to broadcast with ``like``."""
    return _at(etas, t, like)


def q_sample(x0: Tensor, y: Tensor, t: Tensor, etas: Tensor, kappa: float, noise: Tensor) -> Tensor:
    """Draw x_t ~ q(x_t | x_0, y) = N(x_0 + eta_t (y - x_0), kappa^2 eta_t I).

    x0, y, noise: [B, C, H, W]; t: [B] integer steps in 1..T.
    """
    eta = eta_at(etas, t, x0)
    return x0 + eta * (y - x0) + kappa * eta.sqrt() * noise


def posterior_mean_var(
    x_t: Tensor, x0: Tensor, t: Tensor, etas: Tensor, kappa: float
) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0, y).

    mean = (eta_{t-1} / eta_t) x_t + (alpha_t / eta_t) x_0
    var  = kappa^2 eta_{t-1} alpha_t / eta_t
    Returns mean [B, C, H, W] and var [B, 1, 1, 1].
    """
    eta = eta_at(etas, t, x_t)
    eta_prev = eta_at(etas, t - 1, x_t)
    alpha = eta - eta_prev
    mean = (eta_prev / eta) * x_t + (alpha / eta) * x0
    var = kappa**2 * eta_prev * alpha / eta
    return mean, var


def scale_input(x_t: Tensor, t: Tensor, etas: Tensor, kappa: float) -> Tensor:
    """Network input normalisation x_t / sqrt(kappa^2 eta_t + 1)."""
    return x_t / (kappa**2 * eta_at(etas, t, x_t) + 1).sqrt()


def prior_sample(y: Tensor, etas: Tensor, kappa: float, noise: Tensor) -> Tensor:
    """Start of the reverse chain: x_T = y + kappa sqrt(eta_T) z."""
    return y + (kappa * etas[-1].sqrt()).to(y) * noise


def sample_loop(
    predict_x0: Callable[[Tensor, Tensor], Tensor],
    y: Tensor,
    etas: Tensor,
    kappa: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the reverse chain t = T..1 and return x_0.

    x_{t-1} = (eta_{t-1}/eta_t) x_t + (alpha_t/eta_t) x0_hat
              + kappa sqrt(eta_{t-1} alpha_t/eta_t) z,   with no noise at t = 1.
    ``predict_x0(x_t, t, step)`` returns x0_hat [B, C, H, W] for steps t [B] (all equal to
    the host integer ``step``, so the caller never reads t back from the device).
    """

    def randn() -> Tensor:
        return torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)

    x = prior_sample(y, etas, kappa, randn())
    for step in range(len(etas), 0, -1):
        t = torch.full((y.shape[0],), step, device=y.device, dtype=torch.long)
        mean, var = posterior_mean_var(x, predict_x0(x, t, step), t, etas, kappa)
        x = mean + var.sqrt() * randn() if step > 1 else mean
    return x
