"""The evaluation half shared by every interpolator: validation/test metrics and panels."""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import NormalDist

import lightning as L
import torch
from torch import Tensor

from vfi.data.benchmarks import ATD_LEVELS
from vfi.errors import VFIError
from vfi.metrics import (
    LPIPS_MIN_SIZE,
    SSIM_WINDOW,
    image_metrics,
    motion_magnitude,
    try_load_lpips,
    uncertainty_metrics,
    warping_error,
)
from vfi.ops import pad_to_multiple
from vfi.ops.dis import DISFlow
from vfi.ops.scene import replace_at_cuts, scene_cuts
from vfi.utils.dist import gather_objects
from vfi.utils.report import aggregate

STD_LEVEL = 2 / 255  # one 8-bit level on the [-1, 1] scale: the unit of ``std_power``


def check_tau(tau: Tensor | float) -> Tensor:
    """tau as a CPU tensor, after checking every value lies strictly inside (0, 1) (a tau on
    a device is read back once: give floats or a CPU tensor to keep the device free of
    synchronisations)."""
    tau = torch.as_tensor(tau, dtype=torch.float32).cpu()
    inside = (tau > 0) & (tau < 1)  # false for NaN too
    if not bool(inside.all()):
        bad = tau[~inside].flatten()[0].item()
        raise VFIError(f"tau must lie in (0, 1), got {bad:g}")
    return tau


def host_taus(batch: dict) -> list[list[float]]:
    """The items' ground-truth times [B][N] as Python floats: ``taus_host``, read by the
    DataLoader's collate on the host (:func:`vfi.data.datamodule.collate_items`), or
    ``taus`` read back (a device synchronisation) for a batch made otherwise."""
    return batch["taus_host"] if "taus_host" in batch else batch["taus"].tolist()


def sample_statistics(x: Tensor, num_samples: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Mean and per-pixel std [B, C, h, w] over the K = num_samples samples stacked
    sample-major in x [K * B, C, H, W], cropped to size (h, w) and clamped to [-1, 1]
    (std is 0 for K = 1)."""
    h, w = size
    x = x[..., :h, :w].clamp(-1, 1).reshape(num_samples, -1, x.shape[1], h, w)
    std = x.std(0, unbiased=False) if num_samples > 1 else torch.zeros_like(x[0])
    return x.mean(0), std


def item_rows(
    batch: dict,
    scores: dict[str, Tensor],
    subsets: list[dict[str, Tensor]],
    curves: dict[str, Tensor] | None,
) -> list[dict]:
    """One JSON-ready row per item: its ``index`` and ``id`` (when the batch has them), its
    scores, subset scores and sparsification curves."""
    rows = []
    for b in range(len(next(iter(scores.values())))):
        row: dict = {}
        if "index" in batch:
            row["index"] = int(batch["index"][b])
        if "id" in batch:
            row["id"] = str(batch["id"][b])
        row.update({k: float(v[b]) for k, v in scores.items()})
        if subsets:
            row.update({k: float(v) for k, v in subsets[b].items()})
        if curves is not None:
            row.update({k: v[b].tolist() for k, v in curves.items()})
        rows.append(row)
    return rows


def is_plain(value) -> bool:
    """Whether ``value`` is plain data: None, a number, a string, or lists and dicts of them."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def built(node):
    """A network, or an optimizer / scheduler partial, from its Hydra config (a dict with
    ``_target_``: the model configs set ``_recursive_: false``, so the constructors receive
    configs and record them with ``save_hyperparameters``); anything else is returned as
    given."""
    if isinstance(node, dict) and "_target_" in node:
        from hydra.utils import instantiate

        return instantiate(node, _convert_="all")
    return node


class InterpolatorModule(L.LightningModule):
    """Base class: subclasses implement :meth:`interpolate`; this class scores it.

    Every validation / test step scores each item into a row; at the end of the pass the rows
    of all ranks are gathered once and their means logged as ``<stage>/<score>`` (the same on
    every rank, whatever scores each rank saw), and kept in :attr:`epoch_rows`. The step
    returns the rows, the frames and the times for callbacks (:mod:`vfi.callbacks`).

    Args:
        val_samples, test_samples: samples K drawn per item at validation / test time.
        lpips_backbone: local AlexNet ``features.*`` weights for LPIPS (None: torchvision's).
        scene_cut: answer pairs that straddle a scene cut (:func:`vfi.ops.scene.scene_cuts`)
            with the nearer input frame and its error's std, instead of interpolating.
        std_floor: b, added in quadrature after a calibrated model's scale s
            (:meth:`TrainableInterpolator.calibrated_std`): the reported std is
            sqrt(s^2 std^2 + b^2) ([-1, 1] scale). The errors against an 8-bit target never
            vanish where the std does (static, flat pixels); a floor outside the scale covers
            them without inflating every std. 0: none.
        std_power: p, the shape of the std before the scale: the reported std is
            sqrt(s^2 r^2 (std / r)^(2 p) + b^2) with r one 8-bit level (2/255 on the [-1, 1]
            scale), so p > 1 widens the gap between small and large stds. A monotone map:
            each pixel value keeps its rank (Spearman and AUSE, scored on channel means, move
            slightly). 1: none.
    """

    def __init__(
        self,
        val_samples: int = 1,
        test_samples: int = 1,
        lpips_backbone: str | None = None,
        scene_cut: bool = False,
        std_floor: float = 0.0,
        std_power: float = 1.0,
    ):
        super().__init__()
        # every constructor argument of the subclass chain (the Hydra config: networks and
        # optimizers as their configs), saved into checkpoints and logged; objects given
        # directly (a network built in code) are not data, so they are left out
        self.save_hyperparameters()
        for name in [k for k, v in self.hparams.items() if not is_plain(v)]:
            del self.hparams[name], self._hparams_initial[name]
        self.scene_cut = scene_cut
        self.std_floor = std_floor
        if not std_power > 0:
            raise VFIError(f"model.std_power must be positive, got {std_power!r}")
        self.std_power = float(std_power)
        self.samples = {"val": val_samples, "test": test_samples}
        self._rows: list[dict] = []  # this rank's rows of the running pass
        self.epoch_rows: dict[str, list[dict]] = {}  # all ranks' rows of the last pass per stage
        self.lpips_backbone = lpips_backbone
        self._cache: dict = {}  # LPIPS / DIS, built lazily, kept out of the state dict
        self.network_calls = 0  # denoiser / refiner evaluations so far (one per batched call)
        self.refresh_calls = 0  # flow-net evaluations by motion refresh (one per batched call)

    def interpolate(
        self, i0: Tensor, i1: Tensor, tau: Tensor | float, num_samples: int = 1
    ) -> tuple[Tensor, Tensor]:
        """Frames at time tau: mean [B, 3, H, W] in [-1, 1] and per-pixel std over samples."""
        raise NotImplementedError

    def collect_calibration(self, outs: list[tuple[Tensor, Tensor]], truth: Tensor) -> None:
        """Validation outputs (mean, std) per time and the ground truth [B, N, 3, H, W], for
        models that calibrate their std (none here)."""

    def sampler_stats(self) -> dict[str, float]:
        """Diagnostics of the sampling since the last call (e.g. solver iterations), logged
        with the metrics."""
        return {}

    motion_refresh = 0  # re-estimate the motion after every m reverse steps (0: never)

    # whether interpolate / interpolate_times take ``outer`` [B, 2, 3, H, W], the frames
    # I_-1 and I2 next to the pair (used by multi-frame networks)
    takes_outer = False

    def interpolate_times(
        self, i0: Tensor, i1: Tensor, times: list[float], num_samples: int = 1, **kwargs
    ) -> list[tuple[Tensor, Tensor]]:
        """Frames at several times, (mean, std) per time; by default one :meth:`interpolate`
        call per time (models that produce every time in one pass override this)."""
        return [self.interpolate(i0, i1, t, num_samples, **kwargs) for t in times]

    def cut_mask(self, i0: Tensor, i1: Tensor, consecutive: bool = False) -> Tensor:
        """Bool [B]: the items whose pair straddles a scene cut (all false without
        ``scene_cut``; ``consecutive``: i0 and i1 are one frame apart,
        :func:`vfi.ops.scene.scene_cuts`). i0, i1: [B, 3, H, W] in [-1, 1]."""
        if not self.scene_cut:
            return torch.zeros(len(i0), dtype=torch.bool, device=i0.device)
        return scene_cuts(i0, i1, self._dis_flow, consecutive)

    @property
    def lpips_net(self):
        """The LPIPS network (None without weights), loaded on first use onto the module's
        device. It is held outside the module tree, so never saved in a checkpoint, and
        follows the module's moves (:meth:`_apply`), as a submodule would."""
        if "net" not in self._cache:
            net = try_load_lpips(self.lpips_backbone)
            self._cache["net"] = None if net is None else net.to(self.device)
        return self._cache["net"]

    def _apply(self, fn, recurse: bool = True):
        if self._cache.get("net") is not None:
            self._cache["net"]._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def batch_measures(self) -> dict[str, dict]:
        """Per split, what the data workers measure for the steps: the arguments of
        :class:`vfi.data.datamodule.MeasuringCollate` (here the scene ``cut`` flags of the
        evaluation items when ``scene_cut`` is on)."""
        cut = ("cut",) if self.scene_cut else ()
        return {"train": {"measures": ()}, "val": {"measures": cut}, "test": {"measures": cut}}

    def setup(self, stage: str) -> None:
        """Tell the DataModule what its workers measure for this model (before Lightning asks
        it for the loaders)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "measures"):
            datamodule.measures.update(self.batch_measures())

    def _log_epoch_means(self, stage: str) -> None:
        """Gather every rank's rows of this pass (one collective, called by every rank) and
        log the mean of each score over the items that have it."""
        rows, self._rows = self._rows, []
        self.epoch_rows[stage] = [row for part in gather_objects(rows) for row in part]
        for name, value in aggregate(self.epoch_rows[stage], stage)[0].items():
            self.log(name, value, prog_bar=name == f"{stage}/psnr", sync_dist=False)

    def _evaluate(self, batch: dict, stage: str) -> dict | None:
        """Interpolate every ground truth of the batch and score it per item: the step's
        outputs (see the class docstring); None when every item was skipped as corrupt."""
        if "I0" not in batch:
            return None
        size, samples = batch["I0"].shape[0], self.samples[stage]
        start, calls, refreshes = time.perf_counter(), self.network_calls, self.refresh_calls
        outs, times = self.evaluation_outputs(batch, samples)
        seconds = time.perf_counter() - start
        if stage == "val":
            self.collect_calibration(outs, batch["gt"])
        scores, curves = self._score(batch, outs, times, samples)
        scores["nfe_per_frame"] = torch.full((size,), (self.network_calls - calls) / len(outs))
        if self.motion_refresh:
            extra_calls = (self.refresh_calls - refreshes) / len(outs)
            scores["refresh_nfe_per_frame"] = torch.full((size,), extra_calls)
        scores["seconds_per_frame"] = torch.full((size,), seconds / (size * len(outs)))
        scores.update({k: torch.full((size,), float(v)) for k, v in self.sampler_stats().items()})
        subsets = self._subset_scores(batch, scores, outs[0][0]) if len(outs) == 1 else []
        rows = item_rows(batch, scores, subsets, curves)
        self._rows += rows
        return {"rows": rows, "outs": outs, "times": times, "batch": batch}

    def evaluation_outputs(
        self, batch: dict, samples: int
    ) -> tuple[list[tuple[Tensor, Tensor]], list[float]]:
        """The frames an evaluation scores: (mean, std) [B, 3, H, W] per ground truth of the
        batch (interpolated with ``samples`` samples; pairs across a scene cut answered by
        :func:`replace_at_cuts`), and their times (the first item's)."""
        i0, i1 = batch["I0"], batch["I1"]
        extra = {"outer": batch.get("outer")} if self.takes_outer else {}
        if "pair_flow_views" in batch:  # the sampler's DIS flows, measured by the workers
            extra["pair_flow_views"] = batch["pair_flow_views"]
        host = host_taus(batch)
        if batch["gt"].shape[1] > 1:  # one time grid for the whole batch
            times = host[0]
            outs, taus = self.interpolate_times(i0, i1, times, samples, **extra), times
        else:  # one time per item (a CPU tensor: nothing is read back from the device)
            per_item = [row[0] for row in host]
            taus = [per_item[0] if len(set(per_item)) == 1 else torch.tensor(per_item)]
            outs = [self.interpolate(i0, i1, taus[0], samples, **extra)]
            times = per_item[:1]
        cut = batch["cut"] if self.scene_cut and "cut" in batch else self.cut_mask(i0, i1)
        return replace_at_cuts(outs, i0, i1, taus, cut), times

    def _score(
        self, batch: dict, outs: list[tuple[Tensor, Tensor]], times: list[float], samples: int
    ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """Per-item scores [B]: PSNR / SSIM / LPIPS (per time ``psnr_tau0.25``, ... and their
        mean when there are several times), the warping error of the generated frames and of
        the true ones (``warp_error``, ``warp_error_gt``; DIS flows between consecutive true
        frames), the calibration of the std where the model reports one (``spearman``, ``ause``,
        ``coverage2``, averaged over times) and, for ``tau_mode=ifd`` models, the error of the
        re-estimated tau (``tau_ifd_error``). Also the mean sparsification curve and oracle
        [B, F] (None without a std).

        ``motion_px``: the item's motion, the 95th percentile over pixels of |F_0->1| (DIS from
        I0 to I1, in pixels), from the inputs only (the same for every model; what
        ``vfi.eval motion_bins=`` splits items by)."""
        truth = batch["gt"]
        per_time = [image_metrics(m, truth[:, j], self.lpips_net) for j, (m, _) in enumerate(outs)]
        scores: dict[str, Tensor] = {
            "motion_px": motion_magnitude(self._dis_flow(batch["I0"], batch["I1"]))
        }
        if len(outs) > 1:
            for t, s in zip(times, per_time, strict=True):
                scores.update({f"{name}_tau{t:g}": v for name, v in s.items()})
        for name in per_time[0]:
            scores[name] = torch.stack([s[name] for s in per_time]).mean(0)
        if len(outs) > 1:
            seq = truth.transpose(0, 1)
            flow = self._dis_flow
            fw = torch.stack([flow(seq[j], seq[j + 1]) for j in range(len(outs) - 1)])
            bw = torch.stack([flow(seq[j + 1], seq[j]) for j in range(len(outs) - 1)])
            scores["warp_error"] = warping_error(torch.stack([m for m, _ in outs]), fw, bw)
            scores["warp_error_gt"] = warping_error(seq, fw, bw)
        curves = None
        if any(bool((std > 0).any()) for _, std in outs):  # the model reports an uncertainty
            calibration = [uncertainty_metrics(m, s, truth[:, j]) for j, (m, s) in enumerate(outs)]
            for name in calibration[0][0]:
                scores[name] = torch.stack([c[0][name] for c in calibration]).mean(0)
            curves = {
                "sparsification": torch.stack([c[1] for c in calibration]).mean(0),
                "oracle": torch.stack([c[2] for c in calibration]).mean(0),
            }
        if getattr(self, "tau_mode", None) == "ifd" and len(outs) == 1:
            with torch.no_grad():
                taus = batch["taus"][:, 0].float()
                pick = self.estimate_tau(batch["I0"], batch["I1"], truth[:, 0], taus)
            scores["tau_ifd_error"] = (pick - taus).abs().cpu()
        return {k: v.detach().float().cpu() for k, v in scores.items()}, curves

    def _subset_scores(
        self, batch: dict, scores: dict[str, Tensor], mean: Tensor
    ) -> list[dict[str, Tensor]]:
        """Per item: its scores under its ATD level (``psnr_easy``, ...; items with a
        ``level``) and inside its motion region (``psnr_roi``, ...; items with a ``roi``
        (x, y, w, h) of at least 11 pixels a side, the SSIM window; LPIPS from 31 pixels,
        AlexNet's minimum)."""
        rows: list[dict[str, Tensor]] = [{} for _ in range(mean.shape[0])]
        names = ("psnr", "ssim", "lpips")
        if "level" in batch:
            for b, level in enumerate(batch["level"].tolist()):
                if 0 <= level < len(ATD_LEVELS):
                    label = ATD_LEVELS[level]
                    rows[b].update({f"{k}_{label}": scores[k][b] for k in names if k in scores})
        if "roi" in batch:
            for b, (x, y, w, h) in enumerate(batch["roi"].tolist()):
                if min(w, h) < SSIM_WINDOW:
                    continue
                window = (b, slice(None), slice(y, y + h), slice(x, x + w))
                lpips_net = self.lpips_net if min(w, h) >= LPIPS_MIN_SIZE else None
                target = batch["gt"][:, 0][window][None]
                inside = image_metrics(mean[window][None], target, lpips_net)
                rows[b].update({f"{k}_roi": v[0].cpu() for k, v in inside.items()})
        return rows

    @property
    def _dis_flow(self) -> DISFlow:
        if "dis" not in self._cache:
            self._cache["dis"] = DISFlow("medium")
        return self._cache["dis"]

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_means("test")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict | None:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict | None:
        return self._evaluate(batch, "test")


def pick_ground_truth(batch: dict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """I0, I1 [B, 3, H, W] and one ground truth per item with its tau ([B, 3, H, W], [B]):
    drawn at random among the item's ``gt`` [B, N, 3, H, W] at ``taus`` [B, N] when N > 1."""
    gt, taus = batch["gt"], batch["taus"].float()
    b, n = taus.shape
    pick = torch.randint(n, (b,), device=taus.device) if n > 1 else taus.new_zeros(b).long()
    rows = torch.arange(b, device=taus.device)
    return batch["I0"], batch["I1"], gt[rows, pick], taus[rows, pick]


def calibration_scale(
    error: Tensor, std: Tensor, floor: float = 0.0, coverage: float = 0.95
) -> Tensor:
    """Post-hoc scale s of a std (as temperature scaling is for classifiers), from a
    calibration set's |errors| and stds (same shape, any): the smallest s for which a share
    ``coverage`` of the errors fall within +-z sqrt(s^2 std^2 + b^2), b = ``floor``,
    z = Phi^-1((1 + coverage) / 2) (1.96 for 0.95). Pixel i is covered from

        s_i = sqrt(max(error_i^2 / z^2 - b^2, 0)) / std_i

    on, so s is the ``coverage`` quantile of the s_i; for b = 0 that is
    quantile(error / std) / z. Where std = 0 no scale helps: with b = 0 such pixels are left
    out, with b > 0 they count as covered or not by the floor alone. For Gaussian errors of
    std s_true * std (b = 0) it returns s_true; it never changes how the pixels rank. NaN when
    nothing is left."""
    z = NormalDist().inv_cdf((1 + coverage) / 2)
    error, std = error.flatten().double(), std.flatten().double()
    needed = ((error / z) ** 2 - floor**2).clamp(min=0).sqrt()
    by_floor = torch.where(needed > 0, torch.inf if floor > 0 else torch.nan, 0.0)
    s = torch.where(std > 0, needed / std, by_floor)
    s = s[~s.isnan()]
    if not s.numel():
        return torch.tensor(torch.nan)
    return torch.quantile(s, coverage).float()


def network_inputs(
    network: torch.nn.Module, i0: Tensor, i1: Tensor, outer: Tensor | None = None
) -> dict[str, Tensor]:
    """The extra inputs of a multi-frame network (one with ``context_frames`` = M > 0, such as
    :class:`vfi.nets.shiftnet.ShiftNet`): ``context`` [B, M, 3, H, W], the M / 2 frames
    before the gap and after it: (I_-1, I0, I1, I2) for M = 4, from i0, i1 [B, 3, H, W] and
    their outer neighbours ``outer`` [B, 2, 3, H, W] (I_-1, I2); without them, copies of i0
    and i1 as at a sequence's ends (I0, I0, I1, I1). None for a one-frame network."""
    m = getattr(network, "context_frames", 0)
    if not m:
        return {}
    before, after = (i0, i1) if outer is None else (outer[:, 0], outer[:, 1])
    frames = [before] * (m // 2 - 1) + [i0, i1] + [after] * (m // 2 - 1)
    return {"context": torch.stack(frames, dim=1)}


def refresh_steps(value: int | str | None, name: str = "model.motion_refresh") -> int:
    """A motion refresh setting (option ``name``) as a number of steps m >= 1, or 0 for
    none/null."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise VFIError(f"{name} must be a number of steps (1 or more) or none, got {value!r}")


def charbonnier(x: Tensor, y: Tensor, eps: float = 1e-3) -> Tensor:
    """mean sqrt((x - y)^2 + eps^2)."""
    return torch.sqrt((x - y) ** 2 + eps**2).mean()


class TrainableInterpolator(InterpolatorModule):
    """An interpolator with an optimizer: learning rate, optimizer / scheduler partials (the
    scheduler steps every training step) and an optional LPIPS loss term.

    Args:
        lr, optimizer, scheduler: learning rate and the Hydra partials of optimizer / scheduler.
        lpips_weight: weight of the LPIPS(prediction, target) term of the training loss.
        outer_fallback: a multi-frame network on items without outer neighbours (I_-1, I2)
            gets copies of I0 and I1 instead (True), or the run stops with one line (False).
        motion_refresh: motion-aware sampling (as MADIFF): after every m reverse steps the
            flows are re-estimated between the current estimate and each input frame and the
            warped prior is rebuilt (:meth:`refresh_flows`); training sees the same refresh.
            None (or "none"): the pair's flows throughout.
        val_samples, test_samples, lpips_backbone: as in :class:`InterpolatorModule`.
    """

    @property
    def takes_outer(self) -> bool:
        """Whether a network reads the outer neighbours (a multi-frame one)."""
        return any(getattr(net, "context_frames", 0) for net in self.children())

    def __init__(
        self,
        lr: float = 5e-4,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        lpips_weight: float = 0.0,
        outer_fallback: bool = True,
        motion_refresh: int | str | None = None,
        val_samples: int = 2,
        test_samples: int = 4,
        **kwargs,
    ):
        super().__init__(val_samples=val_samples, test_samples=test_samples, **kwargs)
        self.outer_fallback = outer_fallback
        self.motion_refresh = refresh_steps(motion_refresh)
        self.lr = lr
        self.optimizer_factory = built(optimizer) or torch.optim.AdamW
        self.scheduler_factory = built(scheduler)
        self.lpips_weight = lpips_weight
        # post-hoc std scale, refitted at every validation during fit (and by vfi.calibrate),
        # saved in checkpoints
        self.register_buffer("uncertainty_scale", torch.ones(()))
        self.refit_calibration = False  # refit outside fit too (vfi.calibrate)
        self._calibration: list[Tensor] = []

    def shaped_std(self, std: Tensor) -> Tensor:
        """r (std / r)^p [B, C, H, W] of a model's own std, p = ``std_power``, r = one 8-bit
        level (:data:`STD_LEVEL`): the std the calibration scale multiplies."""
        if self.std_power == 1:
            return std
        return STD_LEVEL * (std / STD_LEVEL) ** self.std_power

    def calibrated_std(self, std: Tensor) -> Tensor:
        """The reported std sqrt(s^2 r^2 (std / r)^(2 p) + b^2) of a model's own std
        [B, C, H, W] (:meth:`shaped_std`), with the calibration scale s, the floor
        b = ``std_floor`` and the shape p = ``std_power``."""
        shaped = self.shaped_std(std)
        return (self.uncertainty_scale.to(std) ** 2 * shaped**2 + self.std_floor**2).sqrt()

    def compile_networks(self, backend: str = "inductor") -> list[str]:
        """torch.compile every trainable network in place (``nn.Module.compile``: parameters
        and state-dict keys stay as they are, so checkpoints are unchanged); returns their
        names."""
        names = []
        for name, net in self.named_children():
            if any(p.requires_grad for p in net.parameters()):
                net.compile(backend=backend)
                names.append(name)
        return names

    def empty_batch_loss(self) -> Tensor | None:
        """The training step's answer to a batch with no items left (all skipped as corrupt):
        None on one process (Lightning skips the step); under DDP 0 * sum(parameters), so this
        rank joins the gradient all-reduce with zero gradients instead of hanging the others."""
        if self.trainer.world_size == 1:
            return None
        return torch.stack([p.sum() for p in self.parameters() if p.requires_grad]).sum() * 0

    def context_inputs(
        self, network: torch.nn.Module, i0: Tensor, i1: Tensor, outer: Tensor | None
    ) -> dict[str, Tensor]:
        """:func:`network_inputs` of ``network`` for i0, i1 [K * B, 3, H', W'] (padded to
        ``multiple``, K samples stacked sample-major) and the items' ``outer`` [B, 2, 3, H, W]
        as given (padded and repeated here), after checking that items without ``outer`` may
        fall back to copies of I0 and I1 (``outer_fallback``); else one line naming the
        data."""
        if not getattr(network, "context_frames", 0):
            return {}
        if outer is not None:
            padded = pad_to_multiple(outer.flatten(0, 1), self.multiple)[0]
            outer = padded.view(*outer.shape[:2], *padded.shape[1:])
            outer = outer.repeat(len(i0) // len(outer), 1, 1, 1, 1)
        elif not self.outer_fallback:
            raise VFIError(
                f"the data gives 2-frame items, and the {type(network).__name__} backbone "
                "needs their outer neighbours I_-1, I2: use data that has them "
                "(data.*.outer=true where offered) or set model.outer_fallback=true"
            )
        return network_inputs(network, i0, i1, outer)

    def pair_flows(
        self, i0: Tensor, i1: Tensor, start: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """F_0->1, F_1->0 [B, 2, H, W] from the two-frame flow net, started from ``start``
        [B, 4, H, W] (the batch's ``pair_flow``, :meth:`measured_pair_flow`) when given."""
        if start is None:
            return self.flow_net(i0, i1)
        return self.flow_net(i0, i1, start=start)

    def measured_pair_flow(self, batch: dict) -> Tensor | None:
        """The batch's ``pair_flow`` [B, 4, H', W'] (DIS, measured by the data workers, see
        :class:`vfi.data.datamodule.MeasuringCollate`), padded like the frames; None without."""
        flow = batch.get("pair_flow")
        return None if flow is None else pad_to_multiple(flow, self.multiple)[0]

    def batch_measures(self) -> dict[str, dict]:
        """Per split, what the data workers measure for the steps: the scene ``cut`` flags
        and, for a DIS-initialised flow net, the DIS flows it starts from, so no step runs
        OpenCV: ``pair_flow`` for training, and for validation and test
        ``pair_flow_views``, the pair in each of the sampler's flip views
        (:meth:`sampler_views`), padded as the sampler pads it."""
        measures = super().batch_measures()
        if getattr(getattr(self, "flow_net", None), "init", None) == "dis":
            measures["train"] = {"measures": ("pair_flow",)}
            for split in ("val", "test"):
                measures[split] = {
                    "measures": (*measures[split]["measures"], "pair_flow_views"),
                    "views": self.sampler_views(split),
                    "multiple": self.multiple,
                }
        return measures

    def sampler_views(self, split: str) -> int:
        """The flip views the validation / test sampler takes of each pair (1: none)."""
        return 1

    def refresh_due(self, done: int, remaining: int) -> bool:
        """Whether the motion is re-estimated after ``done`` reverse steps, with ``remaining``
        still to run: after every ``motion_refresh`` steps, never after the last one."""
        m = self.motion_refresh
        return bool(m) and remaining > 0 and done > 0 and done % m == 0

    def refresh_flows(
        self, estimate: Tensor, i0: Tensor, i1: Tensor, current: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Motion refresh: flows between a frame estimate at some time t (clamped to [-1, 1])
        and each input frame, from one batched flow-net call: ``to0`` = F_t->0, ``to1`` =
        F_t->1, ``from0`` = F_0->t, ``from1`` = F_1->t, each [N, 2, H, W]. All inputs
        [N, 3, H, W]; ``current``: the flows in use at t (``to0``, ``to1``, and ``from0``,
        ``from1``, taken as -F_t->0, -F_t->1 when absent). A DIS-initialised flow net starts
        from them instead of running DIS, so no refresh leaves the device."""
        self.refresh_calls += 1
        x = estimate.clamp(-1, 1)
        a, b = torch.cat([x, x]), torch.cat([i0, i1])
        if getattr(self.flow_net, "init", None) != "dis":
            towards, back = self.flow_net(a, b)
        else:
            to0, to1 = current["to0"], current["to1"]
            from0, from1 = current.get("from0", -to0), current.get("from1", -to1)
            start = torch.cat([torch.cat([to0, to1]), torch.cat([from0, from1])], dim=1)
            towards, back = self.flow_net(a, b, start=start)
        (to0, to1), (from0, from1) = towards.chunk(2), back.chunk(2)
        return {"to0": to0, "to1": to1, "from0": from0, "from1": from1}

    def lpips_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """lpips_weight * mean LPIPS(pred, target) (0 when the weight is 0)."""
        if self.lpips_weight <= 0:
            return pred.new_zeros(())
        if self.lpips_net is None:
            raise VFIError(
                "model.lpips_weight > 0 needs LPIPS weights: set paths.lpips_backbone "
                "(or model.lpips_weight=0)"
            )
        if min(pred.shape[-2:]) < LPIPS_MIN_SIZE:
            raise VFIError(
                f"model.lpips_weight > 0 needs training crops of at least {LPIPS_MIN_SIZE} px, "
                f"got {pred.shape[-2]}x{pred.shape[-1]}: give larger ones "
                "(data.train.augment.crop, or data.train.size for flying) or model.lpips_weight=0"
            )
        return self.lpips_weight * self.lpips_net(pred.clamp(-1, 1), target).mean()

    def supervised_loss(
        self, pred: Tensor, prior: Tensor, target: Tensor, prior_weight: float
    ) -> Tensor:
        """Charbonnier(pred, target) + prior_weight Charbonnier(prior, target) + the LPIPS term,
        logged as train/loss, train/loss_x and train/loss_prior."""
        loss_x, loss_prior = charbonnier(pred, target), charbonnier(prior, target)
        loss = loss_x + prior_weight * loss_prior + self.lpips_loss(pred, target)
        b = pred.shape[0]
        self.log("train/loss", loss, batch_size=b, prog_bar=True)
        self.log("train/loss_x", loss_x, batch_size=b)
        self.log("train/loss_prior", loss_prior, batch_size=b)
        return loss

    calibration_pixels = 4096  # (|error|, std) pairs kept per item and time for the fit

    def collect_calibration(self, outs: list[tuple[Tensor, Tensor]], truth: Tensor) -> None:
        """Keep |mean - gt| and the model's own std as shaped (:meth:`shaped_std`: the
        reported one with the floor and scale taken out) at a fixed number of random pixel
        values per item and time, for :func:`calibration_scale`."""
        scale = self.uncertainty_scale
        for j, (mean, std) in enumerate(outs):
            error, std = (mean - truth[:, j]).abs().flatten(1), std.flatten(1)
            pick = torch.randint(error.shape[1], (self.calibration_pixels,), device=std.device)
            own = (std[:, pick] ** 2 - self.std_floor**2).clamp(min=0).sqrt() / scale.to(std)
            self._calibration.append(torch.stack([error[:, pick], own]).detach().float())

    def on_validation_epoch_end(self) -> None:
        """During fit (or with ``refit_calibration``), refit the std scale on this validation
        pass (logged as ``val/uncertainty_scale``; kept where the fit is NaN or 0, so the
        model's own std can always be recovered from the reported one); the checkpoint saved
        after it carries the new value."""
        super().on_validation_epoch_end()
        pairs, self._calibration = self._calibration, []
        if self.trainer.state.fn != "fit" and not self.refit_calibration:
            return
        parts = [p for part in gather_objects([p.cpu() for p in pairs]) for p in part]
        if not parts:
            return
        error, std = torch.cat([p.flatten(1) for p in parts], 1)
        scale = calibration_scale(error, std, self.std_floor)
        if scale.isfinite() and scale > 0:  # 0: the floor alone covers; the model's std is kept
            self.uncertainty_scale.fill_(float(scale))
        self.log("val/uncertainty_scale", self.uncertainty_scale, sync_dist=False)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters(), lr=self.lr)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_start(self) -> None:
        self.print(f"training starts at global step {self.global_step}")
