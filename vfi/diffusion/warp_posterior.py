"""The warp-posterior bridge: a Brownian bridge in video time with flow-warped means.

Time grid 0 = l_0 < ... < l_T = 1; x_0 = I0, x_T = I1. Prior marginals
q(x_k | x_0, x_T) = N(mu_k, beta_k I) with beta_k = kappa^2 l_k (1 - l_k), and transitions
x_k = mu_k + rho_k S_k[x_{k-1} - mu_{k-1}] + N(0, gamma_k I) with the one-step warp S_k.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from vfi.errors import VFIError

LinearOp = Callable[[Tensor], Tensor]


def bridge_variance(l: Tensor | float, kappa: float) -> Tensor | float:
    """beta = kappa^2 l (1 - l): zero at both endpoints (l a float or a tensor)."""
    return kappa**2 * l * (1 - l)


def transition_coefficients(
    l_prev: Tensor | float, l_k: Tensor | float, kappa: float
) -> tuple[Tensor | float, Tensor | float]:
    """rho_k = (1 - l_k) / (1 - l_{k-1});
    gamma_k = kappa^2 (l_k - l_{k-1}) (1 - l_k) / (1 - l_{k-1})."""
    rho = (1 - l_k) / (1 - l_prev)
    gamma = kappa**2 * (l_k - l_prev) * (1 - l_k) / (1 - l_prev)
    return rho, gamma


def adjoint(op: LinearOp, v: Tensor) -> Tensor:
    """S^T v for a linear operator S: ``op.transpose(v)`` when the operator carries its
    transpose (e.g. :class:`vfi.ops.BackwardWarp`), otherwise the vector-Jacobian product of
    S at zero.

    The autograd route refuses (one line naming the operator) when grad mode is on and S
    depends on tensors that require grad (e.g. flows): differentiating S^T v there needs S's
    double backward, which CUDA's ``grid_sample`` lacks."""
    transpose = getattr(op, "transpose", None)
    if transpose is not None:
        return transpose(v)
    if torch.is_grad_enabled() and op(torch.zeros_like(v)).requires_grad:
        name = getattr(op, "__qualname__", type(op).__name__)
        raise VFIError(
            f"operator {name} has no transpose: its adjoint by autograd under grad needs a double "
            "backward that CUDA lacks; give it a transpose method or call it under no_grad"
        )
    u = torch.zeros_like(v, requires_grad=True)
    with torch.enable_grad():
        out = op(u)
        (grad,) = torch.autograd.grad(out, u, v, create_graph=torch.is_grad_enabled())
    return grad


def gram_diagonal(op: LinearOp, like: Tensor) -> Tensor:
    """Exact diag(S^T S), D_i = sum_j S_ji^2, by applying S to every basis vector.

    Costs one application per element of ``like`` [B, ...]; meant for small inputs and checks."""
    n = like[0].numel()
    basis = torch.eye(n, dtype=like.dtype, device=like.device).view(n, *like.shape[1:])
    col_norms = [
        op(basis[i].expand_as(like).contiguous()).flatten(1).pow(2).sum(1) for i in range(n)
    ]
    return torch.stack(col_norms).T.reshape(like.shape)


def conjugate_gradient(
    apply_a: LinearOp, b: Tensor, tol: float = 1e-10, max_iter: int = 200, check_every: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """Solve A x = b for symmetric positive definite A (matrix-free), from x = 0.

    Converged when ||r|| <= tol ||b||. The host reads that flag only every ``check_every``
    iterations (0: never, always ``max_iter`` iterations), so a GPU syncs once per
    ``check_every``; iterations after convergence are masked out (x, r, p stay), so x is
    what stopping at the first converged iteration gives. Returns x, the iterations and the
    relative residual (0-dim tensors on b's device)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum()
    b_norm = b.norm().clamp_min(torch.finfo(b.dtype).tiny)
    threshold = (tol * b_norm) ** 2
    iterations = torch.zeros((), dtype=torch.long, device=b.device)
    for it in range(max_iter):
        if check_every and it % check_every == 0 and bool(rr <= threshold):
            break
        active = rr > threshold
        ap = apply_a(p)
        alpha = torch.where(active, rr / torch.where(active, (p * ap).sum(), 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum()
        p = torch.where(active, r + (rr_new / torch.where(active, rr, 1.0)) * p, p)
        rr = torch.where(active, rr_new, rr)
        iterations = iterations + active.long()
    return x, iterations, rr.detach().sqrt() / b_norm.detach()


Coefficient = float | Tensor


def diagonal_variance(
    gram_diag: Tensor, rho: Coefficient, gamma: Coefficient, beta_prev: Coefficient
) -> tuple[Tensor, Tensor]:
    """Diagonal-mode posterior variance beta gamma / (rho^2 D beta + gamma), and that
    denominator (rho^2 D beta + gamma), per pixel."""
    denom = rho**2 * gram_diag * beta_prev + gamma
    return beta_prev * gamma / denom, denom


def posterior(
    x_k: Tensor,
    mu_prev: Tensor,
    mu_k: Tensor,
    warp: LinearOp,
    rho: Coefficient,
    gamma: Coefficient,
    beta_prev: Coefficient,
    mode: str = "exact",
    gram_diag: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 200,
    stats: dict | None = None,
    check_every: int = 10,
) -> tuple[Tensor, Tensor | None]:
    """q(x_{k-1} | x_k, x_0, x_T) = N(mean, var).

    H = rho^2 S^T S / gamma + I / beta_{k-1}
    mean = mu_{k-1} + H^{-1} rho S^T (x_k - mu_k) / gamma
    mode="exact": solve with H by conjugate gradients, in at least float32 with autocast off
    (var is None; iterations and residual go into ``stats`` as 0-dim tensors; convergence read
    every ``check_every`` iterations). mode="diagonal": S^T S is
    replaced by its diagonal D (``gram_diag``, or computed exactly by probing), giving per pixel
    var = beta gamma / (rho^2 D beta + gamma), mean = mu_{k-1} + rho beta S^T(x_k - mu_k) / (...).
    rho, gamma, beta_prev are floats or tensors broadcasting against x_k (e.g. [B, 1, 1, 1],
    one step per item). Degenerate steps: beta_{k-1} = 0 gives (mu_{k-1}, 0); rho = gamma = 0
    gives (mu_{k-1}, beta_{k-1}).
    """
    if mode not in ("exact", "diagonal"):
        raise ValueError(f"mode must be 'exact' or 'diagonal', got {mode!r}")
    if all(isinstance(c, int | float) for c in (rho, gamma, beta_prev)):  # host-side checks
        if gamma == 0 and rho != 0:
            raise ValueError("gamma = 0 with rho != 0 is not a bridge step")
        if beta_prev == 0:
            return mu_prev, torch.zeros_like(mu_prev)
        if gamma == 0:
            return mu_prev, torch.full_like(mu_prev, beta_prev)
    # Coefficients, and the exact solve, in at least float32 whatever the inputs' precision.
    # Per-item tensors are handled without reading them on the host (no device sync): a
    # degenerate step gets safe stand-ins (gamma = 1 with rho = 0 leaves the prior).
    work = torch.promote_types(x_k.dtype, torch.float32)
    rho, gamma, beta = (
        torch.as_tensor(c, dtype=work, device=x_k.device) for c in (rho, gamma, beta_prev)
    )
    pinned = beta == 0
    gamma = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
    beta_safe = torch.where(pinned, torch.ones_like(beta), beta)
    if mode == "diagonal":
        innovation = adjoint(warp, x_k - mu_k)
        d = gram_diagonal(warp, x_k) if gram_diag is None else gram_diag
        var, denom = diagonal_variance(d, rho, gamma, beta_safe)
        mean = (mu_prev + rho * beta_safe * innovation / denom).to(mu_prev.dtype)
        var = torch.where(pinned, 0.0, var).to(mu_prev.dtype)
        return torch.where(pinned, mu_prev, mean), var

    def apply_h(v: Tensor) -> Tensor:
        return rho**2 * adjoint(warp, warp(v)) / gamma + v / beta_safe

    device = x_k.device.type  # autocast off where the device has it (not on meta)
    with (
        torch.autocast(device, enabled=False)
        if torch.amp.is_autocast_available(device)
        else nullcontext()
    ):
        rhs = rho * adjoint(warp, x_k.to(work) - mu_k.to(work)) / gamma
        delta, iters, residual = conjugate_gradient(apply_h, rhs, tol, max_iter, check_every)
    if stats is not None:
        stats.update(iterations=iters, residual=residual)
    return torch.where(pinned, mu_prev, mu_prev + delta.to(mu_prev.dtype)), None


def time_grid(num_steps: int, targets: list[float] | tuple[float, ...] = ()) -> Tensor:
    """0 = l_0 < ... < l_T = 1: the uniform grid k / num_steps with the ``targets`` inserted."""
    grid = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    extra = torch.as_tensor(list(targets), dtype=torch.float64)
    return torch.unique(torch.cat([grid, extra]).round(decimals=12))


def reverse_bridge(
    i0: Tensor,
    i1: Tensor,
    times: Tensor,
    prior_mean: Callable[[int], Tensor],
    one_step_warp: Callable[[int], LinearOp],
    kappa: float,
    mode: str = "diagonal",
    gram_diag: Callable[[int], Tensor] | None = None,
    refine: Callable[[Tensor, Tensor, int], Tensor] | None = None,
    on_step: Callable[[Tensor, int], None] | None = None,
    noise: bool = True,
    generator: torch.Generator | None = None,
    stop: int = 0,
    denoised: bool = False,
    tol: float = 1e-10,
    max_iter: int = 200,
    stats: list | None = None,
    check_every: int = 10,
) -> list[Tensor]:
    """One reverse pass x_T = I1 -> x_stop; returns [x_stop, ..., x_T] on the grid ``times``
    (stop = 0: the whole path, ending at x_0 = I0).

    prior_mean(k) is mu_k (k = 1..T-1), one_step_warp(k) is S_k (time l_{k-1} -> l_k),
    gram_diag(k) its diag(S_k^T S_k) (None: probed exactly; small inputs only). ``refine``
    adds a learned residual to the posterior mean: x^_{k-1} = mu~ + refine(mu~, x_k, k - 1).
    ``on_step(x_k, k)`` is called at the start of step k (x_k -> x_{k-1}), before the step asks
    for any of its terms (e.g. to re-estimate the motion from x_k).
    x_{k-1} = x^_{k-1} + sqrt(var) z; in exact mode the mean comes from conjugate gradients
    (``tol``, ``max_iter``, ``check_every``; each step's iterations and residual are appended
    to ``stats``)
    while the noise uses the diagonal-mode variance.

    ``denoised``: return the estimates x^_k (0 < k < T, before their noise) in place of the
    states x_k: the frames the refiner was trained to predict, while the chain itself goes on
    from the noisy states (as DDPM's last step returns its mean).
    """
    num = len(times) - 1

    def mu(k: int) -> Tensor:
        return i0 if k == 0 else i1 if k == num else prior_mean(k)

    path, x_k = [i1], i1
    for k in range(num, max(stop, 1), -1):
        l_prev, l_k = float(times[k - 1]), float(times[k])
        rho, gamma = transition_coefficients(l_prev, l_k, kappa)
        beta_prev = float(bridge_variance(l_prev, kappa))
        if on_step is not None:
            on_step(x_k, k)
        warp = one_step_warp(k)
        d = None if gram_diag is None else gram_diag(k)
        step_stats: dict = {}
        mean, var = posterior(
            x_k, mu(k - 1), mu(k), warp, rho, gamma, beta_prev, mode, d, tol, max_iter, step_stats,
            check_every,
        )  # fmt: skip
        if stats is not None and step_stats:
            stats.append(step_stats)
        if refine is not None:
            mean = mean + refine(mean, x_k, k - 1)
        if noise:
            if var is None:  # exact mode: the noise uses the diagonal variance
                d = gram_diagonal(warp, x_k) if d is None else d
                var, _ = diagonal_variance(d, rho, gamma, beta_prev)
            z = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            x_k = mean + var.sqrt() * z
        else:
            x_k = mean
        path.append(mean if denoised else x_k)
    if stop == 0:
        path.append(i0)  # k = 1: beta_0 = 0, so x_0 = mu_0 = I0 exactly
    return path[::-1]
