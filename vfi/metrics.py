"""Image-quality metrics under the common VFI protocol, and the LPIPS network loader."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from vfi.errors import VFIError
from vfi.ops import quantize, warp_backward

log = logging.getLogger(__name__)


def load_lpips(backbone: str | None = None) -> nn.Module:
    """LPIPS (AlexNet, v0.1) from the ``lpips`` package, frozen and in eval mode.

    ``backbone`` is a torchvision-format AlexNet ``features.*`` state dict. With None, the
    usual torchvision ImageNet weights are used (downloaded once by torchvision); so with "".
    """
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if not backbone:
            net = lpips.LPIPS(net="alex", version="0.1", verbose=False)
        else:
            path = Path(backbone).expanduser()
            if not path.is_file():
                raise VFIError(
                    f"LPIPS backbone weights not found: {path} (expected AlexNet "
                    "features.* state dict)"
                )
            net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
            state = torch.load(path, map_location="cpu", weights_only=True)
            for slice_ in (
                net.net.slice1,
                net.net.slice2,
                net.net.slice3,
                net.net.slice4,
                net.net.slice5,
            ):
                for index, layer in slice_.named_children():
                    if isinstance(layer, nn.Conv2d):
                        layer.weight.data.copy_(state[f"features.{index}.weight"])
                        layer.bias.data.copy_(state[f"features.{index}.bias"])
    net.eval().requires_grad_(False)
    return net


def try_load_lpips(backbone: str | None) -> nn.Module | None:
    """:func:`load_lpips`, or None with a one-line warning when the weights cannot be had
    (offline with no local backbone)."""
    try:
        return load_lpips(backbone)
    except VFIError:
        raise
    except Exception as exc:  # noqa: BLE001 - any download failure means "no LPIPS"
        log.warning(
            "LPIPS disabled: AlexNet weights unavailable (%s). Set paths.lpips_backbone "
            "or VFI_LPIPS_BACKBONE to a local features.* state dict.",
            str(exc).splitlines()[0][:120],
        )
        return None


LPIPS_MIN_SIZE = 31  # AlexNet's stride-4 stem and two 3x3 / 2 max-pools leave nothing below
SSIM_WINDOW = 11


def image_metrics(pred: Tensor, target: Tensor, lpips_net: nn.Module | None) -> dict[str, Tensor]:
    """Per-image PSNR (8-bit, RGB, 0-255), SSIM (Gaussian 11 / 1.5) and LPIPS.

    pred, target: [B, 3, H, W] in [-1, 1]. Returns tensors [B] keyed psnr, ssim (and lpips).
    """
    p, t = quantize(pred.float()), quantize(target.float())
    out = {
        "psnr": peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3)),
        "ssim": structural_similarity_index_measure(
            p,
            t,
            data_range=1.0,
            reduction="none",
            gaussian_kernel=True,
            sigma=1.5,
            kernel_size=SSIM_WINDOW,
        ),
    }
    if lpips_net is not None:
        if min(p.shape[-2:]) < LPIPS_MIN_SIZE:
            raise VFIError(
                f"LPIPS (AlexNet) needs frames of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} "
                f"pixels, got {p.shape[-2]}x{p.shape[-1]}"
            )
        lpips_net.to(p.device)
        out["lpips"] = lpips_net(p * 2 - 1, t * 2 - 1).flatten()
    return out


def warping_error(frames: Tensor, flows_fw: Tensor, flows_bw: Tensor) -> Tensor:
    """Temporal consistency of a frame sequence (Lai et al., 2018, with L1): per item, the mean
    over consecutive pairs j of the masked mean |Q(x_j) - W(Q(x_{j+1}), F_j->j+1)|, on the
    8-bit grid in [0, 1], where W is the backward warp and the mask M keeps pixels passing the
    forward-backward check |F_fw + F~_bw|^2 < 0.01 (|F_fw|^2 + |F~_bw|^2) + 0.5, F~_bw being
    F_j+1->j warped by F_j->j+1 (Sundaram et al., 2010).

    frames: [N, B, 3, H, W] in [-1, 1]; flows_fw, flows_bw: [N-1, B, 2, H, W] (F_j->j+1 and
    F_j+1->j, backward-warping sense). Returns [B].
    """
    errors = []
    for j in range(frames.shape[0] - 1):
        fw = flows_fw[j]
        bw = warp_backward(flows_bw[j], fw)
        bound = 0.01 * (fw.pow(2).sum(1, keepdim=True) + bw.pow(2).sum(1, keepdim=True)) + 0.5
        mask = ((fw + bw).pow(2).sum(1, keepdim=True) < bound).to(frames.dtype)
        diff = (quantize(frames[j]) - warp_backward(quantize(frames[j + 1]), fw)).abs()
        errors.append((diff * mask).sum((1, 2, 3)) / (3 * mask.sum((1, 2, 3))).clamp_min(1))
    return torch.stack(errors).mean(0)


def motion_magnitude(flow: Tensor, q: float = 0.95) -> Tensor:
    """The q-quantile (0 <= q <= 1) over pixels of the flow magnitude |F| per item, linearly
    interpolated between the sorted values as numpy's default (no size limit, unlike
    torch.quantile): the motion size SNU-FILM-style difficulty bins split items by.

    flow: [B, 2, H, W] (pixels). Returns [B], in the flow's units."""
    ranked = flow.float().norm(dim=1).flatten(1).sort(dim=1).values  # [B, H * W]
    position = q * (ranked.shape[1] - 1)
    low = int(position)
    high = min(low + 1, ranked.shape[1] - 1)
    return torch.lerp(ranked[:, low], ranked[:, high], position - low)


SPARSIFICATION_FRACTIONS = torch.linspace(0, 0.99, 100)


def sparsification_curve(error: Tensor, order_by: Tensor, fractions: Tensor) -> Tensor:
    """Mean ``error`` [N] of the pixels left after removing the floor(f N) pixels with the
    largest ``order_by`` [N], for each fraction f of ``fractions`` [F] (on any device).
    Returns [F] on ``error``'s device."""
    fractions = fractions.to(error)
    ranked = error[torch.argsort(order_by, descending=True, stable=True)]
    n = ranked.numel()
    tail_sums = ranked.flip(0).cumsum(0).flip(0)  # tail_sums[r] = sum of ranked[r:]
    removed = (fractions * n).floor().long().clamp(max=n - 1)
    return tail_sums[removed] / (n - removed).to(error.dtype)


def ause(error: Tensor, uncertainty: Tensor, fractions: Tensor = SPARSIFICATION_FRACTIONS):
    """Area Under the Sparsification Error (Ilg et al., 2018): the trapezoid area over
    ``fractions`` between the sparsification curve ordered by ``uncertainty`` and the oracle
    ordered by the true ``error`` (both [N]). 0 when the uncertainty ranks pixels as the error
    does. Returns (AUSE, curve [F], oracle [F])."""
    curve = sparsification_curve(error, uncertainty, fractions)
    oracle = sparsification_curve(error, error, fractions)
    return torch.trapezoid(curve - oracle, fractions.to(error)), curve, oracle


def uncertainty_metrics(
    mean: Tensor, std: Tensor, target: Tensor, fractions: Tensor = SPARSIFICATION_FRACTIONS
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Calibration of a per-pixel standard deviation against the error of the mean.

    mean, std, target: [B, 3, H, W] on the [-1, 1] scale. Per pixel the error is the
    channel-mean |mean - target| and the uncertainty the channel-mean std, both halved to the
    [0, 1] image scale. Returns per-item tensors [B] keyed ``spearman`` (rank correlation of
    uncertainty and error), ``ause`` and ``coverage2`` (share of pixel values within
    +-2 std of the target), and the sparsification curves and oracles [B, F].
    """
    from torchmetrics.functional import spearman_corrcoef

    error = ((mean - target).abs().mean(1) / 2).flatten(1).double()
    spread = (std.mean(1) / 2).flatten(1).double()
    scores = {"spearman": [], "ause": []}
    curves, oracles = [], []
    for e, u in zip(error, spread, strict=True):
        scores["spearman"].append(spearman_corrcoef(u, e))
        area, curve, oracle = ause(e, u, fractions.double())
        scores["ause"].append(area)
        curves.append(curve)
        oracles.append(oracle)
    inside = ((mean - target).abs() <= 2 * std).float().flatten(1).mean(1)
    out = {k: torch.stack(v).float() for k, v in scores.items()}
    out["coverage2"] = inside
    return out, torch.stack(curves).float(), torch.stack(oracles).float()


# the image scores compared item by item (vfi.eval), with the decimals they are reported to
PAIRED_SCORES = {"psnr": 3, "ssim": 4, "lpips": 5}
LOWER_IS_BETTER = frozenset({"lpips"})


def paired_difference(a: list[float], b: list[float], name: str) -> dict:
    """Two models' scores ``name`` (``psnr``, ``ssim``, ``lpips``) on the same N items, a and b
    [N], compared item by item: the mean difference d = mean(a - b), its 95% Student-t
    interval d -+ t_{0.975, N - 1} s / sqrt(N) (s the std of a - b; ``low``, ``high``: None for
    fewer than two items or identical differences) and ``won``, the items where a is better
    (higher, or lower for LPIPS)."""
    from scipy.stats import ttest_rel

    if len(a) != len(b) or not a:
        raise ValueError(
            f"expected two equal, non-empty lists of scores, got {len(a)} and {len(b)}"
        )
    diff = [x - y for x, y in zip(a, b, strict=True)]
    low = high = None
    if len(diff) > 1 and len(set(diff)) > 1:
        low, high = (float(v) for v in ttest_rel(a, b).confidence_interval(0.95))
    better = (lambda d: d < 0) if name in LOWER_IS_BETTER else (lambda d: d > 0)
    won = sum(better(d) for d in diff)
    return {"mean": sum(diff) / len(diff), "low": low, "high": high, "won": won, "n": len(diff)}
