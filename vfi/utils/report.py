"""report.png: the metrics per model as bars, and the sparsification curves; the per-item
rows they are aggregated from."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import torch
from matplotlib.figure import Figure

from vfi.metrics import SPARSIFICATION_FRACTIONS
from vfi.utils.run import write_atomic

CURVES = ("sparsification", "oracle")
BARS = (("psnr", "PSNR (dB), higher is better"), ("ssim", "SSIM, higher is better"),
        ("lpips", "LPIPS, lower is better"))  # fmt: skip


def plot_report(records: list[dict], curves: dict[str, dict], path: str | Path) -> Path:
    """:func:`report_figure` written to ``path`` as a PNG, atomically."""
    fig = report_figure(records, curves)
    return write_atomic(Path(path), lambda tmp: fig.savefig(tmp, dpi=110))


def report_figure(records: list[dict], curves: dict[str, dict]) -> Figure:
    """Bars of PSNR, SSIM and LPIPS per record (``{"model", "data", "metrics"}``), from zero
    with each value printed on its bar, and, for the models in ``curves`` with a
    ``sparsification`` curve, that curve beside its oracle (mean absolute error of the pixels
    kept against the fraction removed). The bar axes come first in ``figure.axes``."""
    labels = [f"{r['model'].split(' (')[0]}\n{r['data']}" for r in records]
    with_curves = {k: v for k, v in curves.items() if "sparsification" in v}
    panels = len(BARS) + (1 if with_curves else 0)
    # a bare Figure draws with Agg and leaves pyplot's backend alone (notebooks stay inline)
    fig = Figure(figsize=(4.2 * panels, 3.8 + 0.15 * len(records)))
    axes = fig.subplots(1, panels)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, title) in zip(axes, BARS, strict=False):
        values = [r["metrics"].get(f"test/{name}", float("nan")) for r in records]
        bars = ax.bar(range(len(values)), values, color=colours[: len(values)])
        ax.bar_label(bars, fmt="%.4g", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        # from zero, so bar lengths compare as the values do; headroom for the printed values
        finite = [v for v in values if math.isfinite(v)]
        top = max(finite, default=0.0)
        ax.set_ylim(min([0.0, *finite]), 1.15 * top if top > 0 else None)
    if with_curves:
        ax = axes[-1]
        fractions = SPARSIFICATION_FRACTIONS.tolist()
        for i, (label, c) in enumerate(with_curves.items()):
            colour = colours[i % len(colours)]
            name = label.split(" (")[0]
            ax.plot(fractions, c["sparsification"], color=colour, label=f"{name}: by std")
            ax.plot(fractions, c["oracle"], color=colour, linestyle="--", label=f"{name}: oracle")
        ax.set_title("sparsification (lower is better)", fontsize=9)
        ax.set_xlabel("fraction of pixels removed", fontsize=8)
        ax.set_ylabel("mean |error| of the rest", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def aggregate(
    rows: list[dict], stage: str = "test"
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Means over the items that have each score (``<stage>/<name>``) and the mean curves."""
    metrics, curves = {}, {}
    for key in sorted({k for row in rows for k in row} - {"index", "id"}):
        values = [row[key] for row in rows if key in row]
        if key in CURVES:
            curves[key] = torch.tensor(values).mean(0).tolist()
        else:
            metrics[f"{stage}/{key}"] = float(sum(values) / len(values))
    return metrics, curves
