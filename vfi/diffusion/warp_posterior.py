"""The warp-posterior bridge: a Brownian bridge in video time with flow-warped means.

Time grid 0 = l_0 < ... < l_T = 1; x_0 = I0, x_T = I1. Prior marginals
q(x_k | x_0, x_T) = N(mu_k, beta_k I) with beta_k = kappa^2 l_k (1 - l_k), and transitions
x_k = mu_k + rho_k S_k[x_{k-1} - mu_{k-1}] + N(0, gamma_k I) with the one-step warp S_k.

The pieces:

- :class:`WarpOperator`, the interface of S_k: apply, transpose, Gram diagonal
  (:class:`vfi.ops.BackwardWarp` is the model's; :func:`as_operator` adapts a plain function);
- :class:`PosteriorSolver`, q(x_{k-1} | x_k, x_0, x_T) of one step, by conjugate gradients
  (:class:`ConjugateGradient`) or per pixel;
- :class:`WarpBridge`, the grid with its beta_k, rho_k, gamma_k, one method per formula
  (:meth:`~WarpBridge.marginal`, :meth:`~WarpBridge.posterior`, :meth:`~WarpBridge.step`)
  and the reverse pass (:meth:`~WarpBridge.sample`), which asks a :class:`BridgeTerms` for
  mu_k, S_k and the learned residual and returns a :class:`BridgePass`: the path and its
  conjugate-gradient solves;
- :func:`posterior` and :func:`reverse_bridge`, their functional forms.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from vfi.errors import VFIError

LinearOp = Callable[[Tensor], Tensor]
Coefficient = float | Tensor


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


def time_grid(num_steps: int, targets: list[float] | tuple[float, ...] = ()) -> Tensor:
    """0 = l_0 < ... < l_T = 1: the uniform grid k / num_steps with the ``targets`` inserted."""
    grid = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    extra = torch.as_tensor(list(targets), dtype=torch.float64)
    return torch.unique(torch.cat([grid, extra]).round(decimals=12))


# --- the operator S ----------------------------------------------------------------------
class WarpOperator(Protocol):
    """A linear operator S on images x [B, C, H, W]: ``S(x)``, ``S.transpose(y)`` = S^T y, and
    ``S.gram_diagonal()`` = diag(S^T S) ([B, 1 or C, H, W], broadcasting against x)."""

    def __call__(self, x: Tensor) -> Tensor: ...

    def transpose(self, y: Tensor) -> Tensor: ...

    def gram_diagonal(self) -> Tensor: ...


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


class FunctionOperator:
    """A :class:`WarpOperator` from a function x -> S x on inputs shaped like ``like``
    [B, C, H, W]: S^T by the function's own ``transpose`` or by autograd (:func:`adjoint`);
    diag(S^T S) as given (``gram``) or probed (:func:`gram_diagonal`, small inputs only)."""

    def __init__(self, apply: LinearOp, like: Tensor, gram: Tensor | None = None):
        self.apply, self.like, self.gram = apply, like, gram

    def __call__(self, x: Tensor) -> Tensor:
        return self.apply(x)

    def transpose(self, y: Tensor) -> Tensor:
        return adjoint(self.apply, y)

    def gram_diagonal(self) -> Tensor:
        return gram_diagonal(self.apply, self.like) if self.gram is None else self.gram


def as_operator(op: LinearOp, like: Tensor, gram: Tensor | None = None) -> WarpOperator:
    """``op`` itself when it is a whole :class:`WarpOperator` and no ``gram`` is given, else a
    :class:`FunctionOperator` of it."""
    whole = all(callable(getattr(op, name, None)) for name in ("transpose", "gram_diagonal"))
    return op if whole and gram is None else FunctionOperator(op, like, gram)


# --- one step's posterior ----------------------------------------------------------------
@dataclass(frozen=True)
class ConjugateGradient:
    """Matrix-free conjugate gradients for A x = b, A symmetric positive definite, from x = 0.

    Converged when ||r|| <= tol ||b||. The host reads that flag only every ``check_every``
    iterations (0: never, always ``max_iter`` iterations), so a GPU syncs once per
    ``check_every``; iterations after convergence are masked out (x, r, p stay), so x is
    what stopping at the first converged iteration gives."""

    tol: float = 1e-10
    max_iter: int = 200
    check_every: int = 10

    def solve(self, apply_a: LinearOp, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x, the iterations and the relative residual (0-dim tensors on b's device)."""
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rr = (r * r).sum()
        b_norm = b.norm().clamp_min(torch.finfo(b.dtype).tiny)
        threshold = (self.tol * b_norm) ** 2
        iterations = torch.zeros((), dtype=torch.long, device=b.device)
        for it in range(self.max_iter):
            if self.check_every and it % self.check_every == 0 and bool(rr <= threshold):
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


@dataclass(frozen=True)
class StepCoefficients:
    """rho_k, gamma_k and beta_{k-1} of one reverse step: floats, or tensors broadcasting
    against x_k (e.g. [B, 1, 1, 1], one step per item)."""

    rho: Coefficient
    gamma: Coefficient
    beta_prev: Coefficient

    @classmethod
    def between(cls, l_prev: Coefficient, l_k: Coefficient, kappa: float) -> StepCoefficients:
        """The step l_{k-1} -> l_k of the bridge with noise scale kappa."""
        rho, gamma = transition_coefficients(l_prev, l_k, kappa)
        return cls(rho, gamma, bridge_variance(l_prev, kappa))


@dataclass(frozen=True)
class StepPrior:
    """The prior's terms of one reverse step: mu_{k-1}, mu_k [B, C, H, W] and S_k (None for
    the step into the pinned endpoint, rho = gamma = 0, whose posterior never applies it)."""

    mu_prev: Tensor
    mu_k: Tensor
    warp: WarpOperator | None


@dataclass(frozen=True)
class Posterior:
    """q(x_{k-1} | x_k, x_0, x_T) = N(mean, var): the mean [B, C, H, W]; var per pixel
    (diagonal mode and degenerate steps) or None (exact mode); the conjugate-gradient
    iterations and relative residual of an exact solve (0-dim tensors, else None)."""

    mean: Tensor
    var: Tensor | None = None
    iterations: Tensor | None = None
    residual: Tensor | None = None


def diagonal_variance(
    gram_diag: Tensor, rho: Coefficient, gamma: Coefficient, beta_prev: Coefficient
) -> tuple[Tensor, Tensor]:
    """Diagonal-mode posterior variance beta gamma / (rho^2 D beta + gamma), and that
    denominator (rho^2 D beta + gamma), per pixel."""
    denom = rho**2 * gram_diag * beta_prev + gamma
    return beta_prev * gamma / denom, denom


@dataclass(frozen=True)
class PosteriorSolver:
    """How a step's posterior is computed: ``mode`` "exact" (conjugate gradients with
    ``cg``, in at least float32 with autocast off) or "diagonal" (S^T S replaced by its
    diagonal D = ``S.gram_diagonal()``, a closed form per pixel)."""

    mode: str = "diagonal"
    cg: ConjugateGradient = field(default_factory=ConjugateGradient)

    def __post_init__(self):
        if self.mode not in ("exact", "diagonal"):
            raise ValueError(f"mode must be 'exact' or 'diagonal', got {self.mode!r}")

    def __call__(self, x_k: Tensor, prior: StepPrior, step: StepCoefficients) -> Posterior:
        """q(x_{k-1} | x_k, x_0, x_T) for x_k [B, C, H, W]:

            H = rho^2 S^T S / gamma + I / beta_{k-1}
            mean = mu_{k-1} + H^{-1} rho S^T (x_k - mu_k) / gamma

        Degenerate steps: beta_{k-1} = 0 gives (mu_{k-1}, 0); rho = gamma = 0 gives
        (mu_{k-1}, beta_{k-1}). Float coefficients are checked on the host; per-item tensors
        are not read there (no device sync): a degenerate item gets safe stand-ins (gamma = 1
        with rho = 0 leaves the prior) and its mean is mu_{k-1}."""
        rho, gamma, beta_prev, mu_prev = step.rho, step.gamma, step.beta_prev, prior.mu_prev
        if all(isinstance(c, int | float) for c in (rho, gamma, beta_prev)):  # host-side checks
            if gamma == 0 and rho != 0:
                raise ValueError("gamma = 0 with rho != 0 is not a bridge step")
            if beta_prev == 0:
                return Posterior(mu_prev, torch.zeros_like(mu_prev))
            if gamma == 0:
                return Posterior(mu_prev, torch.full_like(mu_prev, beta_prev))
        # coefficients in at least float32 whatever the inputs' precision
        work = torch.promote_types(x_k.dtype, torch.float32)
        rho, gamma, beta = (
            torch.as_tensor(c, dtype=work, device=x_k.device) for c in (rho, gamma, beta_prev)
        )
        pinned = beta == 0
        gamma = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
        safe = StepCoefficients(rho, gamma, torch.where(pinned, torch.ones_like(beta), beta))
        solve = self.exact if self.mode == "exact" else self.diagonal
        return solve(x_k, prior, safe, pinned)

    @staticmethod
    def diagonal(
        x_k: Tensor, prior: StepPrior, step: StepCoefficients, pinned: Tensor
    ) -> Posterior:
        """Per pixel: var = beta gamma / (rho^2 D beta + gamma),
        mean = mu_{k-1} + rho beta S^T (x_k - mu_k) / (rho^2 D beta + gamma); mu_{k-1} and 0
        where ``pinned`` (beta_{k-1} = 0). Coefficients in the working precision."""
        innovation = prior.warp.transpose(x_k - prior.mu_k)
        d = prior.warp.gram_diagonal()
        var, denom = diagonal_variance(d, step.rho, step.gamma, step.beta_prev)
        out = prior.mu_prev.dtype
        mean = (prior.mu_prev + step.rho * step.beta_prev * innovation / denom).to(out)
        var = torch.where(pinned, 0.0, var).to(out)
        return Posterior(torch.where(pinned, prior.mu_prev, mean), var)

    def exact(
        self, x_k: Tensor, prior: StepPrior, step: StepCoefficients, pinned: Tensor
    ) -> Posterior:
        """mean = mu_{k-1} + H^{-1} rhs, rhs = rho S^T (x_k - mu_k) / gamma, by conjugate
        gradients in the coefficients' precision with autocast off (where the device has it);
        mu_{k-1} where ``pinned``. var is None: see :meth:`noise_variance`."""
        warp, work = prior.warp, step.rho.dtype

        def apply_h(v: Tensor) -> Tensor:
            return step.rho**2 * warp.transpose(warp(v)) / step.gamma + v / step.beta_prev

        device = x_k.device.type  # autocast off where the device has it (not on meta)
        with (
            torch.autocast(device, enabled=False)
            if torch.amp.is_autocast_available(device)
            else nullcontext()
        ):
            innovation = x_k.to(work) - prior.mu_k.to(work)
            rhs = step.rho * warp.transpose(innovation) / step.gamma
            delta, iterations, residual = self.cg.solve(apply_h, rhs)
        mean = prior.mu_prev + delta.to(prior.mu_prev.dtype)
        return Posterior(torch.where(pinned, prior.mu_prev, mean), None, iterations, residual)

    @staticmethod
    def noise_variance(post: Posterior, prior: StepPrior, step: StepCoefficients) -> Tensor:
        """The variance of the noise a step draws: the posterior's own, or for an exact solve
        the diagonal mode's beta gamma / (rho^2 D beta + gamma)."""
        if post.var is not None:
            return post.var
        d = prior.warp.gram_diagonal()
        return diagonal_variance(d, step.rho, step.gamma, step.beta_prev)[0]


# --- the reverse pass --------------------------------------------------------------------
class BridgeTerms(Protocol):
    """What the reverse pass asks of the prior, by grid index k (0 < k < T for the means)."""

    def observe(self, x_k: Tensor, k: int) -> None:
        """Called at the start of step k (x_k -> x_{k-1}), before the step asks for any of
        its terms (e.g. to re-estimate the motion from x_k)."""

    def mean(self, k: int) -> Tensor:
        """mu_k [N, C, H, W]."""

    def warp(self, k: int) -> WarpOperator:
        """S_k, the one-step warp from l_{k-1} to l_k."""

    def refine(self, mean: Tensor, x_k: Tensor, k: int) -> Tensor | None:
        """A learned residual added to the posterior mean ``mean`` of x_k (the estimate of
        the state at index k, drawn from the one at k + 1); None: none."""


@dataclass(frozen=True)
class SampleOptions:
    """How a reverse pass runs: down to x_stop (0: the whole path, ending at x_0 = I0), with
    the Gaussian noise drawn from ``generator`` (``noise`` False: the posterior means alone),
    returning the states, or with ``denoised`` the estimates x^_k (0 < k < T, before their
    noise: what a refiner is trained to predict, while the chain goes on from the noisy
    states, as DDPM's last step returns its mean)."""

    stop: int = 0
    noise: bool = True
    generator: torch.Generator | None = None
    denoised: bool = False


@dataclass(frozen=True)
class CGSolve:
    """One exact solve's conjugate-gradient iterations and relative residual (0-dim tensors
    on the device)."""

    iterations: Tensor
    residual: Tensor


@dataclass(frozen=True)
class BridgePass:
    """A reverse pass's output: the path [x_stop, ..., x_T] (or the estimates, see
    :class:`SampleOptions`), each [N, C, H, W], and the exact mode's solves in step order
    (none in diagonal mode; nothing is read on the host here)."""

    path: list[Tensor]
    solves: tuple[CGSolve, ...] = ()


class WarpBridge:
    """The bridge on the grid ``times`` [T + 1] (float64, 0 = l_0 < ... < l_T = 1) with noise
    scale ``kappa``, its posteriors computed by ``solver``.

    Holds, as host floats, l_k, beta_k = kappa^2 l_k (1 - l_k) (k = 0..T) and
    rho_k = (1 - l_k) / (1 - l_{k-1}), gamma_k = kappa^2 (l_k - l_{k-1}) (1 - l_k) / (1 - l_{k-1})
    (k = 1..T; index 0 holds None)."""

    def __init__(self, times: Tensor, kappa: float, solver: PosteriorSolver | None = None):
        self.times, self.kappa = times, kappa
        self.solver = PosteriorSolver() if solver is None else solver
        self.l = [float(t) for t in times]
        self.beta = [bridge_variance(l, kappa) for l in self.l]
        steps = [
            transition_coefficients(self.l[k - 1], self.l[k], kappa) for k in range(1, len(self.l))
        ]
        self.rho = [None] + [rho for rho, _ in steps]
        self.gamma = [None] + [gamma for _, gamma in steps]

    @property
    def num_steps(self) -> int:
        """T."""
        return len(self.l) - 1

    def coefficients(self, k: int) -> StepCoefficients:
        """rho_k, gamma_k, beta_{k-1} of grid step k (host floats)."""
        return StepCoefficients(self.rho[k], self.gamma[k], self.beta[k - 1])

    def between(self, l_prev: Coefficient, l_k: Coefficient) -> StepCoefficients:
        """The coefficients of a step l_{k-1} -> l_k off the grid (e.g. per item [B, 1, 1, 1])."""
        return StepCoefficients.between(l_prev, l_k, self.kappa)

    def marginal(self, mu: Tensor, l: Tensor | float, z: Tensor) -> Tensor:
        """A draw of q(x_l | x_0, x_T) = N(mu_l, beta_l I): x = mu + sqrt(beta_l) z, with
        mu, z [B, C, H, W] and l a float or per item [B]."""
        beta = torch.as_tensor(bridge_variance(l, self.kappa)).to(mu).view(-1, 1, 1, 1)
        return mu + beta.sqrt() * z

    def posterior(self, x_k: Tensor, prior: StepPrior, step: StepCoefficients) -> Posterior:
        """q(x_{k-1} | x_k, x_0, x_T) = N(mean, var) (:class:`PosteriorSolver`):
        mean = mu_{k-1} + H^{-1} rho S^T (x_k - mu_k) / gamma,
        H = rho^2 S^T S / gamma + I / beta_{k-1}."""
        return self.solver(x_k, prior, step)

    def step(self, mean: Tensor, var: Tensor, generator: torch.Generator | None) -> Tensor:
        """x_{k-1} = x^_{k-1} + sqrt(var) z, z ~ N(0, I) drawn from ``generator``; mean and
        var [N, C, H, W] (var broadcasting)."""
        z = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + var.sqrt() * z

    def step_prior(self, k: int, terms: BridgeTerms, ends: tuple[Tensor, Tensor]) -> StepPrior:
        """S_k, mu_{k-1} and mu_k from ``terms`` (asked in that order), with the endpoints
        mu_0 = I0 and mu_T = I1 exactly (``ends``). The step from x_T (l_T = 1: rho_T =
        gamma_T = 0) asks no S_T: its posterior is the prior's N(mu_{T-1}, beta_{T-1}), so
        the terms at l_T are never built."""
        warp = terms.warp(k) if self.rho[k] != 0 else None
        means = [
            ends[0] if j == 0 else ends[1] if j == self.num_steps else terms.mean(j)
            for j in (k - 1, k)
        ]
        return StepPrior(*means, warp)

    def sample(
        self, i0: Tensor, i1: Tensor, terms: BridgeTerms, options: SampleOptions | None = None
    ) -> BridgePass:
        """One reverse pass x_T = I1 -> x_stop (i0, i1 [N, C, H, W]): at each step k,
        x^_{k-1} = mean of q(x_{k-1} | x_k, I0, I1) + terms.refine(...), then
        x_{k-1} = x^_{k-1} + sqrt(var) z, the variance in exact mode the diagonal mode's.
        The step k = 1 is not run: beta_0 = 0, so x_0 = mu_0 = I0 exactly."""
        options = SampleOptions() if options is None else options
        path, x_k, solves = [i1], i1, []
        for k in range(self.num_steps, max(options.stop, 1), -1):
            terms.observe(x_k, k)
            prior, coefficients = self.step_prior(k, terms, (i0, i1)), self.coefficients(k)
            post = self.posterior(x_k, prior, coefficients)
            if post.iterations is not None:
                solves.append(CGSolve(post.iterations, post.residual))
            residual = terms.refine(post.mean, x_k, k - 1)
            mean = post.mean if residual is None else post.mean + residual
            if options.noise:
                var = self.solver.noise_variance(post, prior, coefficients)
                x_k = self.step(mean, var, options.generator)
            else:
                x_k = mean
            path.append(mean if options.denoised else x_k)
        if options.stop == 0:
            path.append(i0)
        return BridgePass(path[::-1], tuple(solves))


# --- functional forms --------------------------------------------------------------------
@dataclass(frozen=True)
class FunctionTerms:
    """:class:`BridgeTerms` from functions of k: ``prior_mean(k)`` = mu_k, ``one_step_warp(k)``
    = S_k (an operator, or a plain function: :func:`as_operator` on inputs like ``like``) with
    ``gram_diag(k)`` its diag(S_k^T S_k) (None: the operator's own, or probed); no
    observation, no learned residual."""

    prior_mean: Callable[[int], Tensor]
    one_step_warp: Callable[[int], LinearOp]
    like: Tensor
    gram_diag: Callable[[int], Tensor] | None = None

    def observe(self, x_k: Tensor, k: int) -> None:
        pass

    def mean(self, k: int) -> Tensor:
        return self.prior_mean(k)

    def warp(self, k: int) -> WarpOperator:
        op = self.one_step_warp(k)
        return as_operator(op, self.like, None if self.gram_diag is None else self.gram_diag(k))

    def refine(self, mean: Tensor, x_k: Tensor, k: int) -> None:
        return None


def posterior(
    x_k: Tensor,
    mu_prev: Tensor,
    mu_k: Tensor,
    warp: LinearOp,
    rho: Coefficient,
    gamma: Coefficient,
    beta_prev: Coefficient,
    mode: str = "exact",
    **options,
) -> tuple[Tensor, Tensor | None]:
    """(mean, var) of :class:`PosteriorSolver` ``mode`` for one step, with the operator S
    ``warp`` (an operator or a plain function, :func:`as_operator`). ``options``:
    ``gram_diag`` (diag(S^T S); None: the operator's own, or probed), the solver's ``tol``,
    ``max_iter``, ``check_every`` (:class:`ConjugateGradient`), and ``stats``, a dict that
    receives an exact solve's ``iterations`` and ``residual``."""
    gram, stats = options.pop("gram_diag", None), options.pop("stats", None)
    solver = PosteriorSolver(mode, ConjugateGradient(**options))
    prior = StepPrior(mu_prev, mu_k, as_operator(warp, x_k, gram))
    post = solver(x_k, prior, StepCoefficients(rho, gamma, beta_prev))
    if stats is not None and post.iterations is not None:
        stats.update(iterations=post.iterations, residual=post.residual)
    return post.mean, post.var


def reverse_bridge(
    i0: Tensor,
    i1: Tensor,
    times: Tensor,
    prior_mean: Callable[[int], Tensor],
    one_step_warp: Callable[[int], LinearOp],
    kappa: float,
    mode: str = "diagonal",
    **options,
) -> list[Tensor]:
    """The path of :meth:`WarpBridge.sample` on the grid ``times`` with :class:`FunctionTerms`
    (``prior_mean``, ``one_step_warp`` and the option ``gram_diag``); the other ``options``
    are :class:`SampleOptions`' (stop, noise, generator, denoised)."""
    terms = FunctionTerms(prior_mean, one_step_warp, i1, options.pop("gram_diag", None))
    bridge = WarpBridge(times, kappa, PosteriorSolver(mode))
    return bridge.sample(i0, i1, terms, SampleOptions(**options)).path
