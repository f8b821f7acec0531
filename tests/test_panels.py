"""Panels: one row per item, rows of different sizes stacked."""

import numpy as np
import torch

from vfi.utils.panels import heatmap, panel_rows, stack_rows


def test_panel_rows_layout_and_values():
    x = torch.zeros(2, 3, 8, 10)
    pred = torch.ones(2, 3, 8, 10)
    std = torch.zeros(2, 3, 8, 10)
    std[1, :, 0, 0] = 1.0
    rows = panel_rows(-torch.ones_like(x), pred, x, pred, std)
    assert len(rows) == 2 and rows[0].shape == (8, 50, 3) and rows[0].dtype == np.uint8
    assert (rows[0][:, :10] == 0).all() and (rows[0][:, 10:20] == 255).all()
    assert (rows[0][:, 20:30] == 128).all()  # 0 in [-1, 1] is mid grey
    hot = heatmap(std[1:])[0, :, 0, 0]
    assert torch.allclose(torch.tensor(rows[1][0, 40]) / 255, hot, atol=1 / 255)


def test_stack_rows_pads_to_the_widest():
    a = np.full((4, 6, 3), 7, np.uint8)
    b = np.full((3, 9, 3), 9, np.uint8)
    out = stack_rows([a, b], gap=1)
    assert out.shape == (8, 9, 3)
    assert (out[:4, :6] == 7).all() and (out[:4, 6:] == 0).all() and (out[5:, :] == 9).all()
