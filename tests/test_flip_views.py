"""Flip views: the K chains of the bridge sample the pair under horizontal and vertical flips
(a geometric self-ensemble), checked against explicit indexing and separate flipped runs."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_motion_fallback_calibration import translated_pair

from vfi.errors import VFIError
from vfi.models.checkpoint import model_from_checkpoint
from vfi.ops import flip_views
from vfi.utils.checkpoint import RELEASE_CHECKPOINT, load_checkpoint
from vfi.utils.run import CONF_DIR


@pytest.mark.parametrize("views", [1, 2, 4])
def test_flip_views_matches_explicit_indexing(views):
    """Sample s of [K * B, C, H, W] (sample-major) is reversed along W when s % views is 1
    or 3, along H when it is 2 or 3; the call is its own inverse."""
    k, b = 8, 3
    x = torch.randn(k * b, 2, 5, 7)
    out = flip_views(x, views, k)
    ref = x.numpy().reshape(k, b, 2, 5, 7).copy()
    for s in range(k):
        v = s % views
        if v in (1, 3):
            ref[s] = ref[s][..., ::-1]
        if v in (2, 3):
            ref[s] = ref[s][..., ::-1, :]
    np.testing.assert_array_equal(out.numpy(), ref.reshape(k * b, 2, 5, 7))
    assert torch.equal(flip_views(out, views, k), x)


def test_flip_views_refuses_a_count_that_does_not_divide_the_samples():
    with pytest.raises(ValueError, match="views must be 1, 2 or 4"):
        flip_views(torch.zeros(6, 1, 2, 2), 4, 6)


def test_release_views_equal_separately_flipped_runs():
    """The released weights at tau = 3/4 (one reverse step from x_T = I1, so the denoised
    estimate draws no noise): K = 4 chains with flip views give the mean and spread of four
    K = 1 runs on the flipped pair, flipped back. The pair (40 x 56) is padded to 48 x 64 in
    each view's own coordinates, so the views are cropped before they are flipped back."""
    model = model_from_checkpoint(RELEASE_CHECKPOINT)
    model.dis_blend = 0.0  # the views alone: DIS's second opinion is checked on its own
    model.std_power = 1.0  # the std before its shape (std_power: tests/test_calibrate.py)
    i0, i1, _ = translated_pair(6, -4, h=40, w=56)
    assert model.flip_views and model.views(4) == 4 and model.views(3) == 1
    mean, std = model.interpolate(i0, i1, 0.75, num_samples=4)
    model.flip_views = False
    seen = []  # each K = 1 run's prior variance (total_std's input)
    total_std = model.total_std
    model.total_std = lambda s, var: seen.append(var) or total_std(s, var)
    runs, variances = [], []
    for dims in ((), (-1,), (-2,), (-2, -1)):

        def flip(x, dims=dims):
            return x.flip(dims) if dims else x

        m, _ = model.interpolate(flip(i0), flip(i1), 0.75, num_samples=1)
        runs.append(flip(m))
        variances.append(flip(seen[-1]))
    runs = torch.stack(runs)
    torch.testing.assert_close(mean, runs.mean(0), rtol=0, atol=1e-5)
    assert float((runs - runs[0]).abs().max()) > 1e-2  # the nets are not flip-equivariant
    # std^2 = the samples' variance + the views' mean prior variance + floor^2
    var = runs.var(0, unbiased=False) + torch.stack(variances).mean(0)
    var = var + model.uncertainty_floor**2
    # compared before the scale (tens in the release), which would multiply float32 rounding
    torch.testing.assert_close(std / model.uncertainty_scale, var.sqrt(), rtol=1e-4, atol=1e-5)


def test_checkpoint_flip_views_override():
    """vfi.eval / vfi.interpolate's flip_views=true|false sets a bridge checkpoint's views; a
    checkpoint of another model is refused with one line."""
    ckpt = load_checkpoint(RELEASE_CHECKPOINT)
    assert model_from_checkpoint(ckpt, flip_views=False).views(4) == 1
    assert model_from_checkpoint(ckpt, flip_views=None).views(4) == 4
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=resshift", "paths.output_dir=/tmp/unused"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    other = {"vfi_config": {"model": model_cfg}, "state_dict": instantiate(cfg.model).state_dict()}
    with pytest.raises(VFIError, match="flip_views applies to the bridge .* ResShiftVFI"):
        model_from_checkpoint(other, flip_views=True)
