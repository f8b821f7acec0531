"""Panels: one row per item under a header naming its columns, rows of different sizes
stacked; report.png's bars start at zero."""

import math

import numpy as np
import torch

from vfi.metrics import SPARSIFICATION_FRACTIONS
from vfi.utils.panels import LABELS, heatmap, panel_rows, stack_rows
from vfi.utils.report import BARS, plot_report, report_figure


def test_panel_rows_layout_and_values():
    x = torch.zeros(2, 3, 8, 10)
    pred = torch.ones(2, 3, 8, 10)
    std = torch.zeros(2, 3, 8, 10)
    std[1, :, 0, 0] = 1.0
    rows = panel_rows(-torch.ones_like(x), pred, x, pred, std, labels=None)
    assert len(rows) == 2 and rows[0].shape == (8, 50, 3) and rows[0].dtype == np.uint8
    assert (rows[0][:, :10] == 0).all() and (rows[0][:, 10:20] == 255).all()
    assert (rows[0][:, 20:30] == 128).all()  # 0 in [-1, 1] is mid grey
    hot = heatmap(std[1:])[0, :, 0, 0]
    assert torch.allclose(torch.tensor(rows[1][0, 40]) / 255, hot, atol=1 / 255)


def test_panel_rows_name_each_column_above_the_unchanged_tiles():
    torch.manual_seed(0)
    h, w = 24, 64
    i0, pred, gt, i1 = (torch.rand(2, 3, h, w) * 2 - 1 for _ in range(4))
    std = torch.rand(2, 3, h, w)
    raw = panel_rows(i0, pred, gt, i1, std, labels=None)
    rows = panel_rows(i0, pred, gt, i1, std)
    top = rows[0].shape[0] - h
    assert 6 <= top <= 28, "a small header row above the tiles"
    for row, tiles in zip(rows, raw, strict=True):
        assert row.shape == (top + h, 5 * w, 3) and row.dtype == np.uint8
        assert (row[top:] == tiles).all(), "the images below the header are the raw tiles"
        assert (row[:top] == rows[0][:top]).all(), "the same header on every row"
    heads = [rows[0][:top, c * w : (c + 1) * w] for c in range(len(LABELS))]
    for label, head in zip(LABELS, heads, strict=True):
        assert (head > 128).sum() >= 4 * len(label), f"no text over the {label!r} column"
        assert (head[:, :1] == 0).all() and (head[:, -1:] == 0).all(), (
            f"the {label!r} label stays inside its column"
        )
    assert len({head.tobytes() for head in heads}) == len(LABELS), "a different label each"
    # labelled rows of different sizes still stack
    small = panel_rows(*(t[:1, :, :16, :32] for t in (i0, pred, gt, i1, std)))[0]
    assert stack_rows([rows[0], small]).shape == (top + h + 2 + small.shape[0], 5 * w, 3)


def test_stack_rows_pads_to_the_widest():
    a = np.full((4, 6, 3), 7, np.uint8)
    b = np.full((3, 9, 3), 9, np.uint8)
    out = stack_rows([a, b], gap=1)
    assert out.shape == (8, 9, 3)
    assert (out[:4, :6] == 7).all() and (out[:4, 6:] == 0).all() and (out[5:, :] == 9).all()


def test_report_bars_start_at_zero(tmp_path):
    records = [
        {
            "model": "bridge (warp)",
            "data": "clips",
            "metrics": {"test/psnr": 30.4, "test/ssim": 0.951, "test/lpips": 0.031},
        },
        {
            "model": "blend",
            "data": "clips",
            "metrics": {"test/psnr": 29.9, "test/ssim": 0.947, "test/lpips": 0.034},
        },
        {"model": "ffmpeg", "data": "clips", "metrics": {"test/psnr": 30.1}},
    ]
    n = len(SPARSIFICATION_FRACTIONS)
    curves = {"bridge (warp)": {"sparsification": [0.05] * n, "oracle": [0.04] * n}}
    fig = report_figure(records, curves)
    assert len(fig.axes) == len(BARS) + 1
    for ax, (name, title) in zip(fig.axes, BARS, strict=False):
        assert ax.get_title() == title
        values = [r["metrics"].get(f"test/{name}", math.nan) for r in records]
        low, high = ax.get_ylim()
        assert low == 0, f"{name} bars start at {low}, not 0"
        assert high >= max(v for v in values if math.isfinite(v))
        assert [p.get_y() for p in ax.patches] == [0] * len(records)
        printed = [f"{v:.4g}" if math.isfinite(v) else "" for v in values]
        assert [t.get_text() for t in ax.texts] == printed, "each value printed on its bar"
    path = plot_report(records, curves, tmp_path / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
