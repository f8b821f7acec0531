"""The warp-posterior bridge as a LightningModule: a Brownian bridge in video time between the
two input frames with flow-warped means, sampled by closed-form posteriors plus a learned
residual (see :mod:`vfi.diffusion.warp_posterior` for the maths)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vfi.diffusion import warp_posterior as wp
from vfi.errors import VFIError
from vfi.models.base import (
    TrainableInterpolator,
    built,
    check_tau,
    host_taus,
    sample_statistics,
)
from vfi.nets.flow import visibilities
from vfi.ops import (
    FLIPS,
    BackwardWarp,
    flip_views,
    intermediate_flows,
    linear_motion_frame,
    pad_to_multiple,
    rescaled_flows,
    warp_backward,
)
from vfi.ops.acceleration import acceleration_field, quadratic_offset
from vfi.ops.dis import DISFlow
from vfi.ops.fusion import (
    INFLUENCES,
    fuse,
    fusion_weights,
    gradient_energy,
    local_departure,
    lowpass_correction,
    mixture_variance,
    motion_confidence,
)

# the bridge terms the refiner reads besides mu~ and x_k (:meth:`WarpPosteriorVFI.refine`)
REFINER_TERMS = ("w0", "w1", "v0", "v1", "confidence")


@dataclass(frozen=True)
class PassContext:
    """What a sampling pass is told besides the pair: ``outer`` [B, 2, 3, H, W] (I_-1 and I2,
    for a multi-frame refiner); ``targets``, the times the caller wants, where a per-time
    motion estimator measures the motion (None: the pass's stop time); ``measured``, that
    motion given instead (:meth:`WarpPosteriorVFI.pair_motion`'s dicts, e.g. the training
    items' cached motion at their taus); ``start``, the pair's two-frame flows measured
    elsewhere ([B, 4, H, W], :meth:`~vfi.models.base.TrainableInterpolator.pair_flows`);
    ``acceleration``, w a [B, 2, H, W] for quadratic motion
    (:meth:`WarpPosteriorVFI.pair_acceleration`), kept with the measured motion."""

    outer: Tensor | None = None
    targets: list[float] | None = None
    measured: list[dict] | None = None
    start: Tensor | None = None
    acceleration: Tensor | None = None


@dataclass(frozen=True)
class SamplePass:
    """One sampling pass's outputs: the ``path`` [x_stop, ..., x_T] (or the estimates, see
    :class:`vfi.diffusion.warp_posterior.SampleOptions`), each [K * B, 3, H, W] sample-major,
    and per grid index k the bridge terms x_k was drawn with (``drawn``, [K * B, ...] each)
    and, where the std counts it (:attr:`WarpPosteriorVFI.residual_share`), the refiner's
    residual R_theta at x_k before ``residual_gain`` (``residuals``, [K * B, 3, H, W] each)."""

    path: list[Tensor]
    drawn: dict[int, dict]
    residuals: dict[int, Tensor]


class WarpPosteriorVFI(TrainableInterpolator):
    """Args:
    flow_net: the motion: a bidirectional flow estimator (I0, I1) -> (F_0->1, F_1->0) whose
        flows at time l are the linear-motion ones (:func:`vfi.ops.intermediate_flows`), or
        an estimator that measures the motion at a time t (``measures_at_time``: e.g.
        :class:`vfi.nets.rife.RifeMotion`, (I0, I1, t) -> F_t->0, F_t->1 and a fusion mask m),
        whose flows at the grid's other times are rescaled (:func:`vfi.ops.rescaled_flows`)
        and whose mask sets the prior's fusion weights (:meth:`bridge_terms`).
    visibility_net: (P_k[I0], B_k[I1], F_l->0, F_l->1, l) -> (v0, v1), or None: v0 = v1 = 1/2
        (a measured mask, or the time weights, fuses the warps alone).
    refiner: U-Net R_theta (input [B, 15, H, W], step size, l) -> residual added to mu~.
    num_steps: T of the uniform grid l_k = k / T (requested times are inserted).
    reverse_path: "chain": one reverse pass runs down the grid through every requested time
        (each state drawn from the one the sampler made before it); "direct": each requested
        time is one step from x_T = I1 (the grid 0, t, 1), the state the refiner then sees is
        I1 itself, never its own output, and training takes every step to l_k = 1 to match.
    kappa: bridge noise scale, beta_k = kappa^2 l_k (1 - l_k) (images in [-1, 1]).
    posterior: "diagonal" (per-pixel closed form) or "exact" (conjugate gradients).
    cg_tol, cg_max_iter: conjugate-gradient stopping rule of the exact mode: convergence is
        read on the host every 10 iterations (a GPU sync each); cg_tol = 0 never reads it
        (always cg_max_iter iterations).
    prior_weight: weight of Charbonnier(mu~, GT) in the loss (trains the flows through mu~).
    rollout_prob: probability that a training batch whose ground truth lies on the grid takes
        x_k from the sampler itself (a reverse pass from I1, no gradient) instead of the
        ground truth at l_k plus N(0, beta_k): the refiner then learns to correct the states
        it meets when sampling.
    eps: the normaliser's epsilon in mu_k = ((1-l) v0 P[I0] + l v1 B[I1]) / (... + eps).
    fallback: "confidence" fuses the warped mean with the blend (1-l) I0 + l I1 by the motion
        confidence c (:func:`vfi.ops.fusion.motion_confidence`, plus the visibility net's
        third output when it has one); "none" keeps the warped mean (c = 1).
    fallback_gain: the gain of the closed-form part of c.
    uncertainty_floor: std added in quadrature to every pixel's (image noise and 8-bit
        rounding, on the [-1, 1] scale) before the calibration scale.
    motion_error: the std of the motion's error as a share of the motion: an edge moved by
        e |v| pixels adds (e |v| |grad mu|)^2 to the variance (:meth:`prior_variance`; 0: none).
    motion_error_sigma: sigma > 0: the motion's error is a share e of the motion's departure
        from its local mean, v - G_sigma * v (:func:`vfi.ops.fusion.local_departure`, a
        Gaussian of sigma px), not of v itself: a uniform motion, however fast, is taken as
        measured, and the error grows where the motion changes (at moving objects' edges).
        None: of v.
    dis_blend: w > 0: every frame x^ is moved towards the DIS frame D (OpenCV DIS flows both
        ways, linear motion: :func:`vfi.ops.linear_motion_frame`) in the low frequencies,
        x^ + w G_sigma * clamp(D - x^, -c, c) (:func:`vfi.ops.fusion.lowpass_correction`), a
        second opinion from an estimator whose errors differ from RIFE's; 0: none. Applied
        when sampling, never in the training step.
    dis_blend_sigma: sigma, the Gaussian's std in px.
    dis_blend_cap: c in 8-bit levels: a larger disagreement counts as c ("clamp"), or the
        scale of Welsch's redescending psi(d) = d exp(-d^2 / 2 c^2) ("welsch").
    dis_blend_influence: "clamp" or "welsch": psi of :func:`vfi.ops.fusion.lowpass_correction`.
    dis_blend_speed: V > 0: the second opinion's weight falls with the pair's speed where it is
        applied, w exp(-s^2 / 2 V^2), s = max(|F_0->1|, |F_1->0|) at the pixel (DIS's own
        flows, px at the frame's size): DIS's coarse-to-fine search loses large displacements;
        None: w everywhere.
    quadratic_motion: w > 0: where the outer neighbours I_-1, I2 are given (``outer``), the
        flows from every time l to the inputs are moved off linear motion by w times the
        quadratic offset d(l) = a / 2 (l^2 - l) of the pair's acceleration a, measured by
        OpenCV DIS on the four frames (:mod:`vfi.ops.acceleration`): F_l->0 - w d(l),
        F_l->1 - w d(l); 0: none. Applied when sampling, never in the training step; the
        model then reads ``outer`` (:attr:`takes_outer`).
    residual_gain: g: when sampling, the refiner's residual counts g times, x^ = mu~ + g R_theta
        (1: as trained). A refiner fitted by a robust loss to an uncertain target shrinks its
        correction towards zero; g > 1 undoes part of that. The part beyond training,
        (g - 1) R_theta, is uncertain: (e_R (g - 1) R_theta)^2 adds to the std's variance
        (:meth:`total_std`). Never applied in the training step.
    residual_error: e_R, the std of that part as a share of it (0: none).
    refiner_views: 1, or 2: when sampling, R_theta is the mean of the refiner's residual for the
        step and for its time reversal, the pair (I1, I0) stepping from x_k = I0 at 1 to
        1 - l_{k-1}: the same posterior mean mu~ (the fused prior is symmetric in time), the
        warps P[I0] <-> B[I1] and visibilities v0 <-> v1 swapped, the times l_{k-1} and
        l_k - l_{k-1} exchanged. The refiner is trained on both directions (``reverse``
        augmentation); RIFE and the prior are computed once, and both views go in one batched
        call. Needs ``reverse_path`` "direct" (every step starts from x_k = I1) and a two-frame
        refiner.
    warp_mode: "bilinear", "bicubic" or "mixed" (their mean) sampling of the prior's warped
        frames P[I0], B[I1] (the posterior's one-step operator S_k stays bilinear: its Gram
        diagonal is closed-form).
    flip_views: when sampling K chains, chain s sees the pair flipped by
        ``vfi.ops.FLIPS[s % V]`` (none, horizontal, vertical, both; V = gcd(K, 4)) and its
        frames are flipped back: a geometric self-ensemble at the same number of network calls
        (the flows are estimated once per view).
    sample_noise: draw the chain's Gaussian noise when sampling (True), or run it on the
        posterior means alone (False: deterministic; K > 1 chains then differ by their views).
    val_samples, test_samples, lpips_weight, scene_cut and the other keyword arguments (lr,
        optimizer, scheduler, lpips_backbone, ...) go to
        :class:`vfi.models.base.TrainableInterpolator`. Every default equals
        ``model/warp_posterior.yaml`` (tests/test_defaults.py).
    """

    one_pass_std = True  # K = 1 gives a std from the prior's terms (:meth:`total_std`)

    def __init__(
        self,
        flow_net: nn.Module,
        visibility_net: nn.Module | None,
        refiner: nn.Module,
        num_steps: int = 4,
        reverse_path: str = "chain",
        kappa: float = 0.01,
        posterior: str = "diagonal",
        cg_tol: float = 1e-4,
        cg_max_iter: int = 50,
        prior_weight: float = 1.0,
        rollout_prob: float = 0.25,
        eps: float = 1e-6,
        fallback: str = "confidence",
        fallback_gain: float = 4.0,
        uncertainty_floor: float = 0.00784,
        motion_error: float = 0.0,
        motion_error_sigma: float | None = None,
        dis_blend: float = 0.0,
        dis_blend_sigma: float = 2.0,
        dis_blend_cap: float = 16.0,
        dis_blend_speed: float | None = None,
        dis_blend_influence: str = "clamp",
        quadratic_motion: float = 0.0,
        residual_gain: float = 1.0,
        residual_error: float = 0.25,
        refiner_views: int = 1,
        warp_mode: str = "bicubic",
        flip_views: bool = True,
        sample_noise: bool = True,
        val_samples: int = 4,
        test_samples: int = 4,
        lpips_weight: float = 0.1,
        scene_cut: bool = True,
        **kwargs,
    ):
        super().__init__(
            val_samples=val_samples,
            test_samples=test_samples,
            lpips_weight=lpips_weight,
            scene_cut=scene_cut,
            **kwargs,
        )
        # in the presets' key order, so the weights start as Hydra's recursive build drew them
        flow_net, refiner, visibility_net = map(built, (flow_net, refiner, visibility_net))
        if posterior not in ("exact", "diagonal"):
            raise VFIError(f"model.posterior must be 'exact' or 'diagonal', got {posterior!r}")
        if num_steps < 2:
            raise VFIError(f"model.num_steps must be at least 2, got {num_steps}")
        if reverse_path not in ("chain", "direct"):
            raise VFIError(f"model.reverse_path must be 'chain' or 'direct', got {reverse_path!r}")
        if kappa <= 0:
            raise VFIError(f"model.kappa must be positive, got {kappa}")
        if motion_error < 0:
            raise VFIError(f"model.motion_error must be at least 0, got {motion_error}")
        if motion_error_sigma is not None and not motion_error_sigma > 0:
            raise VFIError(
                f"model.motion_error_sigma must be positive or null, got {motion_error_sigma}"
            )
        if dis_blend < 0 or not dis_blend_sigma > 0 or dis_blend_cap < 0:
            raise VFIError(
                "model.dis_blend and model.dis_blend_cap must be at least 0 and "
                f"model.dis_blend_sigma positive, got {dis_blend}, {dis_blend_cap}, "
                f"{dis_blend_sigma}"
            )
        if dis_blend_influence not in INFLUENCES:
            raise VFIError(
                f"model.dis_blend_influence must be one of {INFLUENCES}, "
                f"got {dis_blend_influence!r}"
            )
        if dis_blend_speed is not None and not dis_blend_speed > 0:
            raise VFIError(f"model.dis_blend_speed must be positive or null, got {dis_blend_speed}")
        if not quadratic_motion >= 0:
            raise VFIError(f"model.quadratic_motion must be at least 0, got {quadratic_motion}")
        if not residual_gain >= 0 or not residual_error >= 0:
            raise VFIError(
                "model.residual_gain and model.residual_error must be at least 0, got "
                f"{residual_gain}, {residual_error}"
            )
        if refiner_views not in (1, 2) or isinstance(refiner_views, bool):
            raise VFIError(f"model.refiner_views must be 1 or 2, got {refiner_views!r}")
        if refiner_views == 2 and (
            reverse_path != "direct" or getattr(refiner, "context_frames", 0)
        ):
            raise VFIError(
                "model.refiner_views=2 needs model.reverse_path=direct and a two-frame refiner, "
                f"got reverse_path={reverse_path!r} and {type(refiner).__name__}"
            )
        if warp_mode not in ("bilinear", "bicubic", "mixed"):
            raise VFIError(
                f"model.warp_mode must be 'bilinear', 'bicubic' or 'mixed', got {warp_mode!r}"
            )
        if fallback not in ("confidence", "none"):
            raise VFIError(f"model.fallback must be 'confidence' or 'none', got {fallback!r}")
        if getattr(flow_net, "measures_at_time", False) and self.motion_refresh:
            raise VFIError(
                "model.motion_refresh needs a two-frame flow net (model/flow_net=dis or learned), "
                f"not {type(flow_net).__name__}"
            )
        self.flow_net = flow_net
        self.visibility_net = visibility_net
        self.refiner = refiner
        self.num_steps = num_steps
        self.reverse_path = reverse_path
        self.kappa = kappa
        self.posterior_mode = posterior
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter
        self.cg_check_every = 10 if cg_tol > 0 else 0
        self.prior_weight = prior_weight
        self.rollout_prob = rollout_prob
        self.eps = eps
        self.fallback = fallback
        self.fallback_gain = fallback_gain
        self.uncertainty_floor = uncertainty_floor
        self.motion_error = motion_error
        self.motion_error_sigma = motion_error_sigma
        self.dis_blend, self.dis_blend_sigma = dis_blend, dis_blend_sigma
        self.dis_blend_cap, self.dis_blend_speed = dis_blend_cap, dis_blend_speed
        self.dis_blend_influence = dis_blend_influence
        self.quadratic_motion = quadratic_motion
        self.residual_gain, self.residual_error = residual_gain, residual_error
        self.refiner_views = refiner_views
        self.warp_mode = warp_mode
        self.flip_views = flip_views
        self.sample_noise = sample_noise
        self.multiple = math.lcm(
            *(getattr(net, "multiple", 1) for net in (flow_net, refiner, visibility_net))
        )
        self.cg_stats: list[wp.CGSolve] = []  # exact mode: every step's solve since sampler_stats

    # --- the bridge's operators ----------------------------------------------------------
    def bridge(self, times: Tensor) -> wp.WarpBridge:
        """The bridge on the grid ``times`` [T'+1] (float64, 0 ... 1) with this model's kappa
        and posterior (``posterior``, ``cg_tol``, ``cg_max_iter``)."""
        cg = wp.ConjugateGradient(self.cg_tol, self.cg_max_iter, self.cg_check_every)
        return wp.WarpBridge(times, self.kappa, wp.PosteriorSolver(self.posterior_mode, cg))

    def bridge_terms(
        self,
        i0: Tensor,
        i1: Tensor,
        f_l0: Tensor,
        f_l1: Tensor,
        l: Tensor,
        mask: Tensor | None = None,
    ) -> dict:
        """The prior at times l [B], from the flows F_l->0, F_l->1 [B, 2, H, W] and a measured
        fusion mask m [B, 1, H, W] or None (:meth:`motion_at`): P[I0], B[I1] (``w0``, ``w1``),
        the fusion weights a, b, the motion confidence c, the mean

            mu = c (a P[I0] + b B[I1]) / (a + b + eps) + (1 - c) ((1-l) I0 + l I1),

        with a = (1-l) v0, b = l v1 from the visibility net's v0, v1 (no mask), or
        a = 2 m v0, b = 2 (1 - m) v1 (the measured mask, modulated by the net, which starts at
        v = 1/2), and the motion per unit time at l, F_l->1 - F_l->0 (``velocity``); all
        [B, C, H, W]. ``v0``, ``v1`` (the refiner's inputs) are the visibility net's outputs, or
        a, b with a mask."""
        w0 = warp_backward(i0, f_l0, mode=self.warp_mode)
        w1 = warp_backward(i1, f_l1, mode=self.warp_mode)
        v0, v1, *logit = visibilities(self.visibility_net, w0, w1, f_l0, f_l1, l)
        t = l.to(i0).view(-1, 1, 1, 1)
        a, b = fusion_weights(v0, v1, t, mask)
        if mask is not None:  # the refiner sees the measured visibilities
            v0, v1 = a, b
        norm = a + b + self.eps
        warped = (a * w0 + b * w1) / norm
        if self.fallback == "confidence":
            logit = logit[0] if logit else None
            c = motion_confidence(w0, w1, i0, i1, logit, self.fallback_gain)
        else:
            c = torch.ones_like(v0)
        mu = fuse(warped, (1 - t) * i0 + t * i1, c)
        return {
            "mu": mu, "w0": w0, "w1": w1, "v0": v0, "v1": v1, "a": a, "b": b, "confidence": c,
            "velocity": f_l1 - f_l0,
        }  # fmt: skip

    def prior_variance(self, terms: dict, i0: Tensor, i1: Tensor, l: float) -> Tensor:
        """The variance [B, C, H, W] the prior mu at time l leaves, from its ``terms``
        (:meth:`bridge_terms` for the B items of i0, i1):

            sum_h p_h (h - mu)^2 + (P[I0] - B[I1])^2 + (e |u| |grad mu|)^2,

        the spread of the four hypotheses it fuses, h = P[I0], B[I1], I0, I1 with weights
        p = c a / Z, c b / Z, (1 - c)(1 - l), (1 - c) l; the warped frames' disagreement; and
        an edge moved by a motion error of e = ``motion_error`` times |u| (Sobel gradient,
        summed over x, y), where u is the motion per unit time v, or with
        ``motion_error_sigma`` its departure from its local mean, v - G_sigma * v."""
        c, a, b, mu = terms["confidence"], terms["a"], terms["b"], terms["mu"]
        norm = a + b + self.eps
        weights = [c * a / norm, c * b / norm, (1 - c) * (1 - l), (1 - c) * l]
        var = mixture_variance([terms["w0"], terms["w1"], i0, i1], weights, mu)
        var = var + (terms["w0"] - terms["w1"]) ** 2
        if self.motion_error > 0:
            u = terms["velocity"]
            if self.motion_error_sigma is not None:
                u = local_departure(u, self.motion_error_sigma)
            edge2 = gradient_energy(mu)
            var = var + self.motion_error**2 * u.pow(2).sum(1, keepdim=True) * edge2
        return var

    @property
    def residual_share(self) -> float:
        """e_R (g - 1): the share of the refiner's residual R_theta that the std counts
        (:meth:`total_std`; 0: no term, nothing kept for it)."""
        return self.residual_error * (self.residual_gain - 1)

    def sampler_views(self, split: str) -> int:
        """The flip views the validation / test sampler takes (:meth:`views`)."""
        return self.views(self.samples[split])

    @property
    def takes_outer(self) -> bool:
        """Whether the model reads the outer neighbours: for quadratic motion, or a multi-frame
        network."""
        return self.quadratic_motion > 0 or super().takes_outer

    def pair_acceleration(self, i0: Tensor, i1: Tensor, outer: Tensor | None) -> Tensor | None:
        """w a [B, 2, H, W]: the acceleration of I_-1, I0, I1, I2 (i0, i1 [B, 3, H, W] and
        ``outer`` [B, 2, 3, H, W]; :func:`vfi.ops.acceleration.acceleration_field`, zero for
        an item without both neighbours) times w = ``quadratic_motion``; None without
        quadratic motion or without ``outer``."""
        if not self.quadratic_motion > 0 or outer is None:
            return None
        field = acceleration_field(outer[:, 0], i0, i1, outer[:, 1], self._dis_flow)
        return self.quadratic_motion * field

    @property
    def measures_at_time(self) -> bool:
        """Whether the flow net measures the motion at a time t (see the class docstring)."""
        return getattr(self.flow_net, "measures_at_time", False)

    def pair_motion(
        self, i0: Tensor, i1: Tensor, at: Tensor | float, start: Tensor | None = None
    ) -> dict:
        """The motion of the pair i0, i1 [B, 3, H, W] for :meth:`motion_at`: F_0->1, F_1->0
        (``f01``, ``f10``) from a two-frame flow net (started from ``start``, see
        :meth:`pair_flows`), or the flows F_at->0, F_at->1 (``to0``, ``to1``) and the mask
        (``mask``) that a per-time estimator measures at time(s) ``at`` (a float or [B])."""
        if not self.measures_at_time:
            f01, f10 = self.pair_flows(i0, i1, start)
            return {"f01": f01, "f10": f10}
        found = self.flow_net(i0, i1, at)
        return {"at": at, "to0": found["to0"], "to1": found["to1"], "mask": found["mask"]}

    @staticmethod
    def motion_at(motion: dict, l: Tensor | float) -> tuple[Tensor, Tensor, Tensor | None]:
        """F_l->0, F_l->1 [B, 2, H, W] and the fusion mask [B, 1, H, W] (None without one) at
        time(s) l (a float or [B]) from a :meth:`pair_motion` (or a motion refresh's flows from a
        state at time ``at``): the linear-motion flows of F_0->1, F_1->0, or the flows measured
        at ``at`` rescaled to l (:func:`vfi.ops.rescaled_flows`) with the mask measured there;
        both moved by -d(l) (:func:`vfi.ops.acceleration.quadratic_offset`) where the motion
        carries an ``acceleration``."""
        if "f01" in motion:
            f_l0, f_l1 = intermediate_flows(motion["f01"], motion["f10"], l)
            mask = None
        else:
            f_l0, f_l1 = rescaled_flows(motion["to0"], motion["to1"], motion["at"], l)
            mask = motion.get("mask")
        if motion.get("acceleration") is not None:
            offset = quadratic_offset(motion["acceleration"], l)
            f_l0, f_l1 = f_l0 - offset, f_l1 - offset
        return f_l0, f_l1, mask

    @staticmethod
    def step_flow(velocity_k: Tensor, dl: Tensor | float) -> Tensor:
        """Backward flow of S_k (time l_{k-1} -> l_k): F_l_k->l_{k-1} = -(l_k - l_{k-1}) v."""
        dl = torch.as_tensor(dl, dtype=velocity_k.dtype, device=velocity_k.device)
        return -dl.view(-1, 1, 1, 1) * velocity_k

    def refine(
        self, mean: Tensor, x_k: Tensor, terms: dict, l_prev: Tensor, dl: Tensor, extra: dict
    ) -> Tensor:
        """R_theta(mu~, x_k, P_{k-1}[I0], B_{k-1}[I1], v0, v1, c; l_{k-1}, l_k - l_{k-1}), with
        the ``extra`` inputs of a multi-frame refiner (:meth:`context_inputs`)."""
        inp = torch.cat([mean, x_k, *(terms[name] for name in REFINER_TERMS)], dim=1)
        self.network_calls += 1
        return self.refiner(inp, dl * 1000.0, l_prev, **extra)

    def sampled_residual(
        self,
        mean: Tensor,
        x_k: Tensor,
        terms: dict,
        l_prev: Tensor,
        dl: Tensor,
        extra: dict,
        i0: Tensor,
    ) -> Tensor:
        """R_theta [N, 3, H, W] for a sampling step from x_k [N, 3, H, W] at l_k to l_{k-1}
        (:meth:`refine`), or with ``refiner_views`` 2 (a two-frame refiner: no ``extra``) the
        mean of it and of the step's time reversal, from x_k = I0 (``i0`` [N, 3, H, W], the
        step starting at l_k = 1):

            (R_theta(mu~, I1, P[I0], B[I1], v0, v1, c; l, 1 - l)
             + R_theta(mu~, I0, B[I1], P[I0], v1, v0, c; 1 - l, l)) / 2,  l = l_{k-1}."""
        if self.refiner_views == 1:
            return self.refine(mean, x_k, terms, l_prev, dl, extra)
        swapped = {"w0": "w1", "w1": "w0", "v0": "v1", "v1": "v0"}
        both = {n: torch.cat([terms[n], terms[swapped.get(n, n)]]) for n in REFINER_TERMS}
        pair = (torch.cat([mean, mean]), torch.cat([x_k, i0]))
        times = (torch.cat([l_prev, 1 - l_prev]), torch.cat([dl, l_prev]))
        forward, backward = self.refine(*pair, both, *times, {}).chunk(2)
        self.network_calls += 1  # two evaluations in one batched call
        return (forward + backward) / 2

    def step_posterior(
        self, bridge: wp.WarpBridge, x_k: Tensor, prev: dict, cur: dict, l: tuple[Tensor, Tensor]
    ) -> Tensor:
        """mu~ of q(x_{k-1} | x_k, I0, I1) for the per-item step l = (l_{k-1}, l_k) [B] each,
        from the bridge terms at l_{k-1} and l_k (:meth:`bridge_terms`)."""
        lp, lk = (t.to(x_k).view(-1, 1, 1, 1) for t in l)
        warp = BackwardWarp(self.step_flow(cur["velocity"], l[1] - l[0]))
        prior = wp.StepPrior(prev["mu"], cur["mu"], warp)
        return bridge.posterior(x_k, prior, bridge.between(lp, lk)).mean

    # --- training ------------------------------------------------------------------------
    @staticmethod
    def ground_truth(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Times [B, N + 2] = (0, taus, 1) and frames [B, N + 2, 3, H, W] = (I0, gt, I1)."""
        taus = batch["taus"].double()
        times = torch.cat([torch.zeros_like(taus[:, :1]), taus, torch.ones_like(taus[:, :1])], 1)
        frames = torch.cat([batch["I0"][:, None], batch["gt"], batch["I1"][:, None]], dim=1)
        return times, frames

    def _shared_grid_times(self, times: list[list[float]]) -> bool:
        """Whether every item has the same ground-truth times [B][N + 2] (host floats), all on
        the grid k / T."""
        t = self.num_steps
        on_grid = all(abs(x * t - round(x * t)) < 1e-6 for x in times[0])
        return on_grid and all(row == times[0] for row in times)

    def next_grid_time(self, l_prev: Tensor) -> Tensor:
        """The first point of the uniform grid k / T after l_{k-1} [B]."""
        return (torch.floor(l_prev * self.num_steps + 1e-9) + 1) / self.num_steps

    def next_time(self, l_prev: Tensor, times: Tensor, step: int = 0) -> Tensor:
        """l_k [B] for the step from l_{k-1} [B] among the items' times [B, N + 2]: the next
        grid point, or for every other item (the even ones at an even training ``step``, the
        odd ones at an odd one) the next ground-truth time where it comes first. The sampler
        inserts the requested times into the grid, so it takes both kinds of step (with T = 2,
        factor 2 steps 1 -> 1/2, factor 4 steps 3/4 -> 1/2). With ``reverse_path`` "direct":
        l_k = 1 for every item, the only step the sampler takes."""
        if self.reverse_path == "direct":
            return torch.ones_like(l_prev)
        grid = self.next_grid_time(l_prev)
        later = torch.where(times > l_prev[:, None] + 1e-9, times, 2.0).amin(1)
        alternate = torch.arange(len(l_prev), device=l_prev.device) % 2 == step % 2
        return torch.where(alternate, torch.minimum(grid, later), grid)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "I0" not in batch:  # every item of the batch was skipped as corrupt
            return self.empty_batch_loss()
        times, frames = self.ground_truth(batch)
        b, n = times.shape
        frames = pad_to_multiple(frames.flatten(0, 1), self.multiple)[0]
        frames = frames.view(b, n, *frames.shape[1:])
        # the items' times as host floats (read before the batch moved to the device): the
        # rollout's choices are made on the host, so the step never waits for the device
        times_host = [[0.0, *row, 1.0] for row in host_taus(batch)]
        rows = torch.arange(b, device=times.device)
        # (a direct path's x_k is I1, the sampler's own state already)
        rollout = self.reverse_path == "chain" and self.rollout_prob > 0
        rollout = rollout and self._shared_grid_times(times_host)
        rollout = rollout and bool(torch.rand(()) < self.rollout_prob)  # CPU draw: no sync
        if rollout:  # one inner time for the whole batch
            inner = torch.tensor([0.0 < x < 1.0 for x in times_host[0]], dtype=torch.float)
            j = int(torch.multinomial(inner, 1))
            pick = torch.full((b,), j, device=times.device)
        else:  # a random inner GT time per item
            inner = (times > 0) & (times < 1)
            pick = torch.multinomial(inner.float(), 1).squeeze(1)
        l_prev = times[rows, pick]
        l_k = self.next_time(l_prev, times, self.global_step)
        gt_prev = frames[rows, pick]
        match = (times - l_k[:, None]).abs() < 1e-6
        has_gt = match.any(1)
        gt_k = frames[rows, match.float().argmax(1)]

        i0, i1 = frames[:, 0], frames[:, -1]
        bridge = self.bridge(wp.time_grid(self.num_steps))  # the training grid k / T
        outer = batch.get("outer")
        cached = self.cached_motion(batch)  # the items' motion at their taus, if any
        if cached is not None:
            motion = {k: v[rows, pick - 1] for k, v in cached.items()} | {"at": l_prev}
        else:  # a per-time estimator measures it at l_{k-1}; a two-frame net for the pair
            motion = self.pair_motion(i0, i1, l_prev, self.measured_pair_flow(batch))
        pair = motion  # a two-frame net's flows serve the rollout's sampler too
        motion = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in motion.items()}
        ends, l_both = (torch.cat([i0, i0]), torch.cat([i1, i1])), torch.cat([l_prev, l_k])
        *flows, mask = self.motion_at(motion, l_both)
        both = self.bridge_terms(*ends, *flows, l_both, mask)
        cur = {k: v[b:] for k, v in both.items()}
        if rollout:  # the sampler's own x_k: run the reverse pass from x_T = I1 down to l_k
            # the grid step after times[j] (every time is on the grid)
            k = math.floor(times_host[0][j] * self.num_steps + 1e-9) + 1
            measured = None if self.measures_at_time else [pair]
            if cached is not None:  # the motion at each tau, as the sampler would measure it
                measured = [
                    {name: v[:, i] for name, v in cached.items()} | {"at": times_host[0][i + 1]}
                    for i in range(n - 2)
                ]
            context = PassContext(outer=outer, measured=measured)
            x_k = self.sample_path(i0, i1, bridge.times, stop=k, context=context)[0]
        else:  # a draw of the bridge's marginal at l_k around the ground truth (or the prior)
            clean = torch.where(has_gt.view(-1, 1, 1, 1), gt_k, cur["mu"].detach())
            x_k = bridge.marginal(clean, l_k, torch.randn_like(clean))
        if self.motion_refresh:  # as in sampling: the step's flows re-read from x_k
            both = self.bridge_terms(
                *ends, *self.refreshed_flows(x_k, i0, i1, l_both, tuple(flows)), l_both, None
            )
            cur = {k: v[b:] for k, v in both.items()}
        prev = {k: v[:b] for k, v in both.items()}

        mean = self.step_posterior(bridge, x_k, prev, cur, (l_prev, l_k))
        extra = self.context_inputs(self.refiner, i0, i1, outer)
        x_hat = mean + self.refine(mean, x_k, prev, l_prev.to(i0), (l_k - l_prev).to(i0), extra)
        return self.supervised_loss(x_hat, mean, gt_prev, self.prior_weight)

    def cached_motion(self, batch: dict[str, Tensor]) -> dict | None:
        """The items' cached motion at their taus (``motion`` [B, N, 5, H, W] from the data,
        :mod:`vfi.data.motion`), padded like the frames: ``to0``, ``to1`` [B, N, 2, H', W'] and
        ``mask`` [B, N, 1, H', W']; None when the batch has none. Only a per-time estimator
        (model/flow_net=rife) takes it: it must be the motion the flow net would measure."""
        if "motion" not in batch:
            return None
        if not self.measures_at_time:
            raise VFIError(
                "the training items carry cached motion (the data's motion=), which only a "
                "per-time estimator uses (model/flow_net=rife): drop it or change the flow net"
            )
        b, n = batch["motion"].shape[:2]
        motion = pad_to_multiple(batch["motion"].flatten(0, 1), self.multiple)[0]
        motion = motion.view(b, n, *motion.shape[1:])
        return {"to0": motion[:, :, 0:2], "to1": motion[:, :, 2:4], "mask": motion[:, :, 4:5]}

    def refreshed_flows(
        self, x_k: Tensor, i0: Tensor, i1: Tensor, l: Tensor, flows: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Training's motion refresh: F_l->0, F_l->1 at the step's times l = (l_{k-1}, l_k)
        [2B] from the flows between the state x_k [B, 3, H, W] at l_k and I0, I1
        (:meth:`refresh_flows`, rescaled by :func:`vfi.ops.rescaled_flows`). Items at
        l_k = 1 (x_k = I1, never refreshed when sampling) keep ``flows``, the pair's
        [2B, 2, H, W] each."""
        current = {"to0": flows[0][len(x_k) :], "to1": flows[1][len(x_k) :]}
        moved = self.refresh_flows(x_k, i0, i1, current)
        l_k = l[len(x_k) :].repeat(2)
        inner = (l_k < 1).view(-1, 1, 1, 1)
        at = torch.where(l_k < 1, l_k, 0.5)
        g0, g1 = (moved[name].repeat(2, 1, 1, 1) for name in ("to0", "to1"))
        fresh = rescaled_flows(g0, g1, at, l)
        return tuple(torch.where(inner, f, pair) for f, pair in zip(fresh, flows, strict=True))

    # --- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample_pass(
        self,
        i0: Tensor,
        i1: Tensor,
        times: Tensor,
        num_samples: int,
        options: wp.SampleOptions,
        context: PassContext,
    ) -> SamplePass:
        """One reverse pass per sample on the grid ``times`` [T'+1] (float64, 0 ... 1), from
        x_T = I1 down to x_stop (:class:`vfi.diffusion.warp_posterior.SampleOptions`). i0, i1:
        [B, 3, H, W] with H, W divisible by ``multiple``. A per-time motion estimator measures
        the motion once at each of the ``context.targets`` (default: times[stop]); every grid
        time takes the nearest one's (:class:`SamplerTerms`). Returns the path, each
        [num_samples * B, 3, H, W] (sample-major), and the terms each x_k was drawn with
        (:class:`SamplePass`); the exact mode's solves are kept for :meth:`sampler_stats`."""
        stop = options.stop
        anchors = (context.targets or [float(times[stop])]) if self.measures_at_time else [None]
        measured = context.measured
        if measured is None:
            measured = [
                dict(self.pair_motion(i0, i1, at, context.start), acceleration=context.acceleration)
                for at in anchors
            ]
        pair = (i0.repeat(num_samples, 1, 1, 1), i1.repeat(num_samples, 1, 1, 1))
        extra = self.context_inputs(self.refiner, *pair, context.outer)
        terms = SamplerTerms(self, pair, times, measured, stop, extra)
        done = self.bridge(times).sample(*pair, terms, options)
        self.cg_stats.extend(done.solves)
        return SamplePass(done.path, terms.drawn, terms.residuals)

    @torch.no_grad()
    def sample_path(
        self,
        i0: Tensor,
        i1: Tensor,
        times: Tensor,
        stop: int = 1,
        num_samples: int = 1,
        noise: bool = True,
        context: PassContext | None = None,
    ) -> list[Tensor]:
        """The path [x_stop, ..., x_T] of :meth:`sample_pass` (the states, each
        [num_samples * B, 3, H, W]), with the chain's noise or without (``noise``)."""
        options = wp.SampleOptions(stop=stop, noise=noise)
        return self.sample_pass(i0, i1, times, num_samples, options, context or PassContext()).path

    def views(self, num_samples: int) -> int:
        """V: how many flip views K = num_samples chains take (``flip_views``), gcd(K, 4)."""
        return math.gcd(num_samples, len(FLIPS)) if self.flip_views else 1

    def sampler_stats(self) -> dict[str, float]:
        """Exact mode: mean conjugate-gradient iterations per step and the largest relative
        residual since the last call (then cleared)."""
        if not self.cg_stats:
            return {}
        iters = sum(float(s.iterations) for s in self.cg_stats) / len(self.cg_stats)
        residual = max(float(s.residual) for s in self.cg_stats)
        self.cg_stats.clear()
        return {"cg_iterations": iters, "cg_residual": residual}

    @torch.no_grad()
    def interpolate_times(
        self,
        i0: Tensor,
        i1: Tensor,
        times: list[float],
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        outer: Tensor | None = None,
        pair_flow_views: Tensor | None = None,
        with_std: bool = True,
    ) -> list[tuple[Tensor, Tensor]]:
        """Every requested time from one reverse pass per sample: (mean, std) [B, 3, H, W] over
        the K = num_samples chains' denoised estimates, per time. The requested times are
        inserted into the grid and the pass stops at the earliest one (``reverse_path``
        "direct": one pass per time, one step from I1). With ``flip_views`` the
        chains take V = :meth:`views` flips of the pair, each padded in its own coordinates,
        cropped and flipped back. Any H, W: padded and cropped back. ``outer`` [B, 2, 3, H, W]:
        I_-1 and I2, for a multi-frame refiner. ``pair_flow_views``: a two-frame flow net's
        start flows for the flipped, padded pairs ([V * B, 4, H', W'], measured by the data
        workers: :class:`vfi.data.datamodule.MeasuringCollate`), used when they fit.
        ``with_std`` False: the std is not computed (zeros), for callers that discard it."""
        targets = [float(t) for t in check_tau(torch.tensor(times)).flatten()]
        if self.reverse_path == "direct":  # one step from I1 to each time: the grid 0, t, 1
            passes = [(wp.time_grid(1, [t]), [t]) for t in targets]
        else:
            passes = [(wp.time_grid(self.num_steps, targets), targets)]
        b, views = len(i0), self.views(num_samples)
        second_opinion = self.dis_second_opinion(i0, i1)
        i0, i1 = (flip_views(x.repeat(views, 1, 1, 1), views, views) for x in (i0, i1))
        if outer is not None:
            outer = flip_views(outer.repeat(views, 1, 1, 1, 1), views, views)
        acceleration = self.pair_acceleration(i0, i1, outer)  # per view, as the views see it
        if acceleration is not None:
            acceleration = pad_to_multiple(acceleration, self.multiple)[0]
        pair, (h, w) = pad_to_multiple(torch.cat([i0, i1]), self.multiple)
        i0p, i1p = pair.chunk(2)
        fits = pair_flow_views is not None and pair_flow_views.shape == (
            len(i0p),
            4,
            *i0p.shape[2:],
        )  # the views and padding the workers measured are this pass's
        share = self.residual_share
        outs = []
        for grid, wanted in passes:
            index = [int(torch.argmin((grid - t).abs())) for t in wanted]
            stop = min(index)
            context = PassContext(
                outer=outer,
                targets=[float(grid[k]) for k in index],
                start=pair_flow_views if fits else None,
                acceleration=acceleration,
            )
            options = wp.SampleOptions(stop, self.sample_noise, generator, denoised=True)
            done = self.sample_pass(i0p, i1p, grid, num_samples // views, options, context)
            for k in index:  # cropped in each view's coordinates, then mapped back
                samples = flip_views(done.path[k - stop][..., :h, :w], views, num_samples)
                mean, std = sample_statistics(samples, num_samples, (h, w))
                if second_opinion is not None:
                    mean = second_opinion(mean, float(grid[k]))
                if not with_std:
                    outs.append((mean, torch.zeros_like(mean)))
                    continue
                # the terms are per view, or per sample after a motion refresh: their
                # variances are mapped back and averaged
                reps = num_samples // views if self.motion_refresh else 1
                terms = {name: v[: reps * len(i0)] for name, v in done.drawn[k].items()}
                ends = (i0p.repeat(reps, 1, 1, 1), i1p.repeat(reps, 1, 1, 1))
                var = self.prior_variance(terms, *ends, float(grid[k]))[..., :h, :w]
                var = flip_views(var, views, reps * views)
                var = var.view(reps * views, b, *var.shape[1:]).mean(0)
                if share != 0:  # the refiner's residual beyond training, per sample
                    extra = flip_views(share * done.residuals[k][..., :h, :w], views, num_samples)
                    var = var + extra.view(num_samples, b, *extra.shape[1:]).pow(2).mean(0)
                outs.append((mean, self.total_std(std, var)))
        return outs

    def dis_second_opinion(self, i0: Tensor, i1: Tensor):
        """With ``dis_blend`` > 0, the function (x^ [B, 3, H, W], t) -> x^ moved towards the
        DIS frame at t (:func:`vfi.ops.fusion.lowpass_correction`), the pair's DIS flows
        measured once for every time; None without it. The flows are measured in a thread of
        their own (OpenCV releases the GIL) while the caller runs the flow net and the refiner:
        20 ms less per 640x360 frame on 2 CPU cores; the first call waits for them."""
        if not self.dis_blend > 0:
            return None
        dis = DISFlow(self._dis_flow.preset)  # the model's DIS, its own OpenCV object: threads
        cap = 2 * self.dis_blend_cap / 255  # 8-bit levels on the [-1, 1] scale

        def measure() -> tuple[Tensor, Tensor, Tensor | float]:
            f01, f10 = dis(i0, i1), dis(i1, i0)
            weight = self.dis_blend
            if self.dis_blend_speed is not None:
                # s^2 from the components: Tensor.norm over the channels is 20x slower on the CPU
                speed2 = torch.maximum(
                    f01.square().sum(1, keepdim=True), f10.square().sum(1, keepdim=True)
                )
                weight = weight * torch.exp(-0.5 * speed2 / self.dis_blend_speed**2)
            return f01, f10, weight

        pool = ThreadPoolExecutor(1)
        measured = pool.submit(measure)
        pool.shutdown(wait=False)  # returns at once; the thread ends with the job

        def correct(mean: Tensor, t: float) -> Tensor:
            f01, f10, weight = measured.result()
            other = linear_motion_frame(i0, i1, f01, f10, t)
            return lowpass_correction(
                mean, other, weight, self.dis_blend_sigma, cap, self.dis_blend_influence
            )

        return correct

    def total_std(self, sample_std: Tensor, prior_var: Tensor) -> Tensor:
        """The reported per-pixel std [B, 3, H, W]:
        s sqrt(std_samples^2 + var_prior + floor^2), with the prior's variance
        (:meth:`prior_variance`, plus (e_R (g - 1) R_theta)^2 averaged over the samples with
        ``residual_gain`` g and ``residual_error`` e_R) and the calibration scale s fitted on
        the validation set."""
        var = sample_std**2 + prior_var + self.uncertainty_floor**2
        return self.calibrated_std(var.sqrt())

    @torch.no_grad()
    def interpolate(
        self,
        i0: Tensor,
        i1: Tensor,
        tau: Tensor | float,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        outer: Tensor | None = None,
        pair_flow_views: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Frames at time tau (a float, or [B]; items with different tau run separately (then
        without ``pair_flow_views``, see :meth:`interpolate_times`); a
        tau on the device is read once on the host: give floats or a CPU tensor to avoid
        that sync); ``outer`` [B, 2, 3, H, W] as in :meth:`interpolate_times`."""
        taus = check_tau(tau).expand(i0.shape[0])
        groups = taus.unique().tolist()
        if len(groups) == 1:
            return self.interpolate_times(
                i0, i1, groups, num_samples, generator, outer, pair_flow_views
            )[0]
        mean, std = torch.empty_like(i0), torch.empty_like(i0)
        for t in groups:
            sel = (taus == t).nonzero().flatten().to(i0.device)
            part = None if outer is None else outer[sel]
            out = self.interpolate_times(i0[sel], i1[sel], [t], num_samples, generator, outer=part)
            mean[sel], std[sel] = out[0]
        return mean, std


class SamplerTerms:
    """The prior's terms one sampling pass of ``model`` asks for
    (:class:`vfi.diffusion.warp_posterior.BridgeTerms`), for the K samples of the pair
    (``pair``: I0, I1 [K * B, 3, H, W], sample-major) on the grid ``times``, from the
    ``measured`` motion (:meth:`WarpPosteriorVFI.pair_motion`'s dicts: every grid time takes
    the nearest one's), with the refiner's ``extra`` inputs.

    The terms at grid index k (:meth:`WarpPosteriorVFI.bridge_terms`, with S_k's flow as
    ``step`` for k >= 1) are built once, for the B items while they share the pair's flows,
    repeated for the K samples, and kept in ``drawn``. With ``motion_refresh`` = m, after every
    m steps (counted from the pass's ``stop``) the flows are re-estimated between each
    sample's state x_k and I0, I1: the terms at l_k are rebuilt
    from them, and those below l_k built from them (:func:`vfi.ops.rescaled_flows`), until the
    next refresh."""

    def __init__(
        self,
        model: WarpPosteriorVFI,
        pair: tuple[Tensor, Tensor],
        times: Tensor,
        measured: list[dict],
        stop: int,
        extra: dict,
    ):
        self.model, self.pair, self.times = model, pair, times
        self.measured, self.stop, self.extra = measured, stop, extra
        self.motion: dict = {}  # after a refresh: the flows from the state at time "at"
        self.drawn: dict[int, dict] = {}
        self.residuals: dict[int, Tensor] = {}  # the refiner's before the gain, for the std
        self.rebuilt: dict[int, dict] = {}  # the terms at the last refresh's own index

    def flows(self, l: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """F_l->0, F_l->1 and the fusion mask (:meth:`WarpPosteriorVFI.motion_at`)."""
        if self.motion:
            return self.model.motion_at(self.motion, l)
        nearest = min(self.measured, key=lambda m: abs(m.get("at", l) - l))
        return self.model.motion_at(nearest, l)

    def build(self, k: int) -> dict:
        """The bridge terms at l_k for the K samples, with S_k's flow (k >= 1)."""
        model, pair, times = self.model, self.pair, self.times
        f_l0, f_l1, mask = self.flows(float(times[k]))
        n = len(f_l0)
        l = torch.full((n,), float(times[k]), device=pair[0].device)
        found = model.bridge_terms(pair[0][:n], pair[1][:n], f_l0, f_l1, l, mask)
        found = {name: v.repeat(len(pair[0]) // n, 1, 1, 1) for name, v in found.items()}
        if k > 0:
            found["step"] = model.step_flow(found["velocity"], float(times[k] - times[k - 1]))
        return found

    def terms(self, k: int) -> dict:
        """The terms at grid index k: rebuilt by the last refresh, or drawn (built once)."""
        if k in self.rebuilt:
            return self.rebuilt[k]
        if k not in self.drawn:
            self.drawn[k] = self.build(k)
        return self.drawn[k]

    def observe(self, x_k: Tensor, k: int) -> None:
        """The motion refresh, when due before step k: flows from x_k to I0, I1."""
        if not self.model.refresh_due(len(self.times) - 1 - k, k - max(self.stop, 1)):
            return
        at = float(self.times[k])
        to0, to1 = (f.repeat(len(x_k) // len(f), 1, 1, 1) for f in self.flows(at)[:2])
        moved = self.model.refresh_flows(x_k, *self.pair, {"to0": to0, "to1": to1})
        self.motion = {**moved, "at": at}
        self.rebuilt = {k: self.build(k)}

    def mean(self, k: int) -> Tensor:
        return self.terms(k)["mu"]

    def warp(self, k: int) -> BackwardWarp:
        return BackwardWarp(self.terms(k)["step"])

    def refine(self, mean: Tensor, x_k: Tensor, k: int) -> Tensor:
        """The refiner's residual for the estimate ``mean`` of x at l_k, from x_{k+1}, times
        the model's ``residual_gain``."""
        l_prev = torch.full((len(mean),), float(self.times[k]), device=mean.device)
        dl = torch.full_like(l_prev, float(self.times[k + 1] - self.times[k]))
        terms, i0 = self.terms(k), self.pair[0]
        residual = self.model.sampled_residual(mean, x_k, terms, l_prev, dl, self.extra, i0)
        if self.model.residual_share:  # kept only for the std's term
            self.residuals[k] = residual
        return self.model.residual_gain * residual
