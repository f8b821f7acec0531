"""ResShift-style residual diffusion for VFI: a short chain from a flow-warped prior y to I_tau."""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vfi.diffusion import resshift as rs
from vfi.errors import VFIError
from vfi.models.autoencoder import load_autoencoder
from vfi.models.base import (
    TrainableInterpolator,
    built,
    check_tau,
    pick_ground_truth,
    sample_statistics,
)
from vfi.nets.flow import visibilities
from vfi.ops import intermediate_flows, pad_to_multiple, softmax_splat, warp_backward
from vfi.ops.fusion import fusion_weights


class ResShiftVFI(TrainableInterpolator):
    """Args:
    flow_net: the motion: a bidirectional flow estimator (I0, I1) -> (F_0->1, F_1->0), or one
        that measures it at tau (``measures_at_time``, e.g. :class:`vfi.nets.rife.RifeMotion`:
        F_tau->0, F_tau->1 and a fusion mask m that sets the prior's weights, backward warping).
    visibility_net: (W0, W1, F_t->0, F_t->1, tau) -> (v0, v1), or None: v0 = v1 = 1/2.
    denoiser: U-Net (input, t, tau) -> residual; x0_hat = y + residual.
    schedule: keyword arguments of :func:`vfi.diffusion.resshift.eta_schedule`.
    warp: "backward" (grid_sample) or "softmax_splat" (forward warping).
    splat_alpha: softmax-splatting importance scale, Z = -alpha |I0 - warp(I1, F_0->1)|.
    aux_weight: loss weight of Charbonnier(y, I_tau).
    tau_mode: "fixed" (the dataset's tau) or "ifd" (re-estimated from flows during training).
    ifd_threshold, ifd_kernel, ifd_tau_range: the IFD estimate's grey-level threshold (images
        in [0, 1]), opening kernel size and the clamp applied to its result.
    space: "pixel", or "latent": the chain runs on the latents of a frame autoencoder
        (``autoencoder``: the checkpoint of a ``model=autoencoder`` run, frozen; after LDMVFI)
        at 1/f of the frame size, with the prior and its parts encoded, and its result decoded
        with the input frames.
    val_samples, test_samples, scene_cut and the other keyword arguments (lr, optimizer,
        scheduler, lpips_weight on LPIPS(x0_hat, I_tau), lpips_backbone, ...) go to
        :class:`vfi.models.base.TrainableInterpolator`. Every default equals
        ``model/resshift.yaml`` (tests/test_defaults.py).
    """

    def __init__(
        self,
        flow_net: nn.Module,
        visibility_net: nn.Module | None,
        denoiser: nn.Module,
        schedule: dict,
        warp: str = "backward",
        splat_alpha: float = 20.0,
        aux_weight: float = 1.0,
        tau_mode: str = "fixed",
        ifd_threshold: float = 0.04,
        ifd_kernel: int = 3,
        ifd_tau_range: tuple[float, float] = (0.05, 0.95),
        space: str = "pixel",
        autoencoder: str | None = None,
        val_samples: int = 2,
        test_samples: int = 4,
        scene_cut: bool = True,
        **kwargs,
    ):
        super().__init__(
            val_samples=val_samples, test_samples=test_samples, scene_cut=scene_cut, **kwargs
        )
        # in the presets' key order, so the weights start as Hydra's recursive build drew them
        flow_net, denoiser, visibility_net = map(built, (flow_net, denoiser, visibility_net))
        if space not in ("pixel", "latent"):
            raise VFIError(f"model.space must be 'pixel' or 'latent', got {space!r}")
        if warp not in ("backward", "softmax_splat"):
            raise VFIError(f"model.warp must be 'backward' or 'softmax_splat', got {warp!r}")
        if tau_mode not in ("fixed", "ifd"):
            raise VFIError(f"model.tau_mode must be 'fixed' or 'ifd', got {tau_mode!r}")
        if getattr(flow_net, "measures_at_time", False) and (
            warp != "backward" or self.motion_refresh or tau_mode != "fixed"
        ):
            raise VFIError(
                f"{type(flow_net).__name__} motion works with model.warp=backward, "
                "model.tau_mode=fixed and no model.motion_refresh (they need two-frame flows)"
            )
        self.flow_net = flow_net
        self.visibility_net = visibility_net
        self.denoiser = denoiser
        # eta_1..eta_T (float64), moved with the module; derived from the config, not saved
        self.register_buffer("etas", rs.eta_schedule(**schedule), persistent=False)
        self.kappa = float(schedule.get("kappa", 2.0))
        self.warp = warp
        self.splat_alpha = splat_alpha
        self.aux_weight = aux_weight
        self.tau_mode = tau_mode
        self.ifd_threshold = ifd_threshold
        self.ifd_kernel = ifd_kernel
        self.ifd_tau_range = tuple(ifd_tau_range)
        if space == "latent" and not autoencoder:
            raise VFIError(
                "model.space=latent needs model.autoencoder=<the checkpoint of a "
                "model=autoencoder run>"
            )
        self.autoencoder = load_autoencoder(autoencoder) if space == "latent" else None
        factor = self.check_latent_space(autoencoder)
        self.multiple = math.lcm(
            getattr(flow_net, "multiple", 1),
            getattr(visibility_net, "multiple", 1),
            factor * getattr(denoiser, "multiple", 1),
        )

    def check_latent_space(self, path: str | None) -> int:
        """The denoiser's downsampling f relative to the frames (1 in pixel space), after
        checking the latent mode's settings (one line each)."""
        if self.autoencoder is None:
            return 1
        if self.lpips_weight > 0:
            raise VFIError(
                "model.space=latent trains in the latent space, where LPIPS has no meaning: "
                "set model.lpips_weight=0"
            )
        channels = self.autoencoder.latent_channels
        if channels != 3:
            raise VFIError(
                f"model.autoencoder={path} has {channels} latent channels; the denoiser reads "
                "and writes 3 (train it with model.autoencoder.latent_channels=3)"
            )
        return self.autoencoder.factor

    # --- the diffusion space ---------------------------------------------------------------
    def to_space(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        """The denoiser's conditioning in the chain's space: the prior's parts as they are in
        pixel space; in latent space E(y), E(W0), E(W1) (and E of the context frames) and
        v0, v1 averaged over f x f blocks, all [B, C, H/f, W/f]."""
        if self.autoencoder is None:
            return parts
        encode, f = self.autoencoder.encode, self.autoencoder.factor
        y, w0, w1 = encode(torch.cat([parts["y"], parts["w0"], parts["w1"]])).chunk(3)
        out = {"y": y, "w0": w0, "w1": w1}
        out |= {name: F.avg_pool2d(parts[name], f) for name in ("v0", "v1")}
        if "context" in parts:
            frames = parts["context"]
            out["context"] = encode(frames.flatten(0, 1)).view(*frames.shape[:2], *y.shape[1:])
        return out

    def frame_to_space(self, frame: Tensor) -> Tensor:
        """A frame [B, 3, H, W] in the chain's space (its latent E(frame) in latent space)."""
        return frame if self.autoencoder is None else self.autoencoder.encode(frame)

    def space_to_frame(self, x: Tensor, i0: Tensor, i1: Tensor) -> Tensor:
        """A state of the chain as a frame [B, 3, H, W]: decoded with the input frames
        i0, i1 in latent space (D(x; I0, I1))."""
        return x if self.autoencoder is None else self.autoencoder.decode(x, i0, i1)

    # --- the prior -----------------------------------------------------------------------
    def pair_motion(
        self, i0: Tensor, i1: Tensor, tau: Tensor, start: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The pair's flows F_0->1, F_1->0 (``f01``, ``f10``; from ``start``, see
        :meth:`pair_flows`) and those the prior warps with:
        to time tau, F_tau->0, F_tau->1 (``f_t0``, ``f_t1``, :func:`intermediate_flows`) and
        from it, F_0->tau = tau F_0->1, F_1->tau = (1 - tau) F_1->0 (``f_0t``, ``f_1t``). A
        per-time estimator gives F_tau->0, F_tau->1 and its fusion mask (``mask``) only."""
        if getattr(self.flow_net, "measures_at_time", False):
            found = self.flow_net(i0, i1, tau)
            return {"f_t0": found["to0"], "f_t1": found["to1"], "mask": found["mask"]}
        f01, f10 = self.pair_flows(i0, i1, start)
        f_t0, f_t1 = intermediate_flows(f01, f10, tau)
        t = tau.view(-1, 1, 1, 1)
        return {
            "f01": f01, "f10": f10, "f_t0": f_t0, "f_t1": f_t1,
            "f_0t": t * f01, "f_1t": (1 - t) * f10,
        }  # fmt: skip

    def refreshed_motion(self, estimate: Tensor, i0: Tensor, i1: Tensor, motion: dict) -> dict:
        """``motion`` with the flows to and from time tau re-estimated from a frame estimate
        at tau [N, 3, H, W] (:meth:`refresh_flows`); the splatting importance keeps the pair's
        F_0->1, F_1->0."""
        names = {"f_t0": "to0", "f_t1": "to1", "f_0t": "from0", "f_1t": "from1"}
        current = {source: motion[name] for name, source in names.items() if name in motion}
        flows = self.refresh_flows(estimate, i0, i1, current)
        return motion | {name: flows[source] for name, source in names.items()}

    def _warp_to_tau(self, i0: Tensor, i1: Tensor, motion: dict) -> tuple[Tensor, Tensor]:
        if self.warp == "backward":
            return warp_backward(i0, motion["f_t0"]), warp_backward(i1, motion["f_t1"])
        z0 = -self.splat_alpha * (i0 - warp_backward(i1, motion["f01"])).abs().mean(1, keepdim=True)
        z1 = -self.splat_alpha * (i1 - warp_backward(i0, motion["f10"])).abs().mean(1, keepdim=True)
        return softmax_splat(i0, motion["f_0t"], z0), softmax_splat(i1, motion["f_1t"], z1)

    def prior(
        self,
        i0: Tensor,
        i1: Tensor,
        tau: Tensor,
        outer: Tensor | None = None,
        motion: dict | None = None,
        eps: float = 1e-6,
    ) -> dict[str, Tensor]:
        """y = (a W0 + b W1) / (a + b + eps) with a = (1-tau) v0, b = tau v1, or with a measured
        fusion mask m (``motion["mask"]``) a = 2 m v0, b = 2 (1 - m) v1 (then the ``v0``, ``v1``
        parts); with its parts (and the ``context`` frames of a multi-frame denoiser, from
        ``outer`` [B, 2, 3, H, W]).

        i0, i1: [B, 3, H, W] (H, W divisible by ``self.multiple``); tau: [B]; ``motion``: the
        flows to warp with (None: :meth:`pair_motion`).
        """
        motion = self.pair_motion(i0, i1, tau) if motion is None else motion
        w0, w1 = self._warp_to_tau(i0, i1, motion)
        v0, v1 = visibilities(self.visibility_net, w0, w1, motion["f_t0"], motion["f_t1"], tau)
        t = tau.view(-1, 1, 1, 1)
        a, b = fusion_weights(v0, v1, t, motion.get("mask"))
        if "mask" in motion:  # the denoiser sees the measured visibilities
            v0, v1 = a, b
        y = (a * w0 + b * w1) / (a + b + eps)
        parts = {"y": y, "w0": w0, "w1": w1, "v0": v0, "v1": v1}
        return parts | self.context_inputs(self.denoiser, i0, i1, outer)

    def predict_x0(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor], tau: Tensor) -> Tensor:
        """x0_hat = y + D([x_t / sqrt(kappa^2 eta_t + 1), y, W0, W1, v0, v1], t, tau), with the
        context frames for a multi-frame denoiser D."""
        inp = torch.cat(
            [
                rs.scale_input(x_t, t, self.etas, self.kappa),
                cond["y"],
                cond["w0"],
                cond["w1"],
                cond["v0"],
                cond["v1"],
            ],
            dim=1,
        )
        self.network_calls += 1
        extra = {"context": cond["context"]} if "context" in cond else {}
        return cond["y"] + self.denoiser(inp, t, tau, **extra)

    # --- tau re-estimation ---------------------------------------------------------------
    @torch.no_grad()
    def estimate_tau(self, i0: Tensor, i1: Tensor, it: Tensor, tau: Tensor) -> Tensor:
        """tau = sum|F_0->tau| M0 / (sum|F_0->tau| M0 + sum|F_1->tau| M1) per item [B], where
        M0 (M1) marks pixels whose grey-level difference between I0 (I1) and I_tau exceeds the
        threshold, after a morphological opening. Falls back to ``tau`` where nothing moves."""
        f_0t, _ = self.flow_net(torch.cat([i0, i1]), torch.cat([it, it]))
        f0, f1 = f_0t.norm(dim=1, keepdim=True).chunk(2)
        grey = [kornia.color.rgb_to_grayscale((x + 1) / 2) for x in (i0, i1, it)]
        kernel = torch.ones(self.ifd_kernel, self.ifd_kernel, device=i0.device)
        m0, m1 = (
            kornia.morphology.opening(((g - grey[2]).abs() > self.ifd_threshold).float(), kernel)
            for g in grey[:2]
        )
        d0 = (f0 * m0).sum(dim=(1, 2, 3))
        d1 = (f1 * m1).sum(dim=(1, 2, 3))
        total = d0 + d1
        estimate = (d0 / total.clamp_min(1e-8)).clamp(*self.ifd_tau_range)
        return torch.where(total > 1e-6, estimate, tau)

    # --- training ------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "I0" not in batch:  # every item of the batch was skipped as corrupt
            return self.empty_batch_loss()
        i0, i1, it, tau = pick_ground_truth(batch)
        i0, i1, it = pad_to_multiple(torch.cat([i0, i1, it]), self.multiple)[0].chunk(3)
        outer = batch.get("outer")
        if self.tau_mode == "ifd":
            tau = self.estimate_tau(i0, i1, it, tau)
            self.log("train/tau_ifd", tau.mean(), batch_size=tau.shape[0])
        motion = self.pair_motion(i0, i1, tau, self.measured_pair_flow(batch))
        cond = self.to_space(self.prior(i0, i1, tau, outer, motion))
        target = self.frame_to_space(it)
        t = torch.randint(1, len(self.etas) + 1, (i0.shape[0],), device=self.device)
        noise = torch.randn_like(target)
        x_t = rs.q_sample(target, cond["y"].detach(), t, self.etas, self.kappa, noise)
        x0_hat, y = self.predict_x0(x_t, t, cond, tau), cond["y"]
        if self.motion_refresh:  # as in sampling: the prior rebuilt from the prediction's flows
            estimate = self.space_to_frame(x0_hat.detach(), i0, i1)
            moved = self.refreshed_motion(estimate, i0, i1, motion)
            fresh = self.to_space(self.prior(i0, i1, tau, outer, moved))
            x0_hat = torch.cat([x0_hat, self.predict_x0(x_t, t, fresh, tau)])
            y, target = torch.cat([y, fresh["y"]]), torch.cat([target, target])
        return self.supervised_loss(x0_hat, y, target, self.aux_weight)

    # --- sampling ------------------------------------------------------------------------
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
        """Run the reverse chain K = num_samples times; return the mean and the per-pixel std
        [B, 3, H, W] of the K samples, times the calibration scale (std is 0 for K = 1). Any
        H, W: padded and cropped back. ``outer`` [B, 2, 3, H, W]: I_-1 and I2, for a
        multi-frame denoiser. ``pair_flow_views``: a DIS-initialised flow net's start flows
        for the padded pair ([B, 4, H', W'], measured by the data workers), used when they
        fit. With ``motion_refresh`` = m, the prior of each sample is rebuilt after every m
        steps from the flows of its prediction x0_hat."""
        b = i0.shape[0]
        tau = check_tau(tau).to(i0.device).expand(b).contiguous()
        pair, (h, w) = pad_to_multiple(torch.cat([i0, i1]), self.multiple)
        i0p, i1p = pair.chunk(2)
        fits = pair_flow_views is not None and pair_flow_views.shape == (b, 4, *i0p.shape[2:])
        motion = self.pair_motion(i0p, i1p, tau, pair_flow_views if fits else None)

        def per_sample(parts: dict) -> dict:
            return {k: v.repeat(num_samples, *[1] * (v.dim() - 1)) for k, v in parts.items()}

        cond = per_sample(self.to_space(self.prior(i0p, i1p, tau, outer, motion)))
        tau_k = tau.repeat(num_samples)
        motion = per_sample(motion)
        i0k, i1k = i0p.repeat(num_samples, 1, 1, 1), i1p.repeat(num_samples, 1, 1, 1)

        def predict(x: Tensor, t: Tensor, step: int) -> Tensor:
            nonlocal cond
            x0_hat = self.predict_x0(x, t, cond, tau_k)
            if self.refresh_due(len(self.etas) - step + 1, step - 1):
                estimate = self.space_to_frame(x0_hat, i0k, i1k)
                moved = self.refreshed_motion(estimate, i0k, i1k, motion)
                cond = self.to_space(self.prior(i0k, i1k, tau_k, outer, moved))
            return x0_hat

        x0 = rs.sample_loop(predict, cond["y"], self.etas, self.kappa, generator)
        x0 = self.space_to_frame(x0, i0k, i1k)
        mean, std = sample_statistics(x0, num_samples, (h, w))
        return mean, self.calibrated_std(std)
