"""Metrics against published reference values and closed forms."""

import math

import numpy as np
import pytest
import torch
from conftest import ALEXNET, SHARED, needs_shared
from PIL import Image

from vfi.errors import VFIError
from vfi.metrics import image_metrics, load_lpips
from vfi.ops import quantize


def _load(name):
    im = np.asarray(Image.open(SHARED / "lpips_ref" / name).convert("RGB"))
    return torch.from_numpy(im.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@needs_shared
def test_lpips_reproduces_reference_pair():
    net = load_lpips(str(ALEXNET))
    ref, p0, p1 = _load("ex_ref.png"), _load("ex_p0.png"), _load("ex_p1.png")
    with torch.no_grad():
        assert abs(net(ref, p0).item() - 0.722) < 1e-3
        assert abs(net(ref, p1).item() - 0.137) < 1e-3


def test_lpips_missing_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(VFIError, match="LPIPS backbone weights not found"):
        load_lpips(str(tmp_path / "nope.pth"))


def test_psnr_is_on_8bit_quantised_images():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    pred = (target + 0.05 * torch.randn(2, 3, 16, 16, generator=g)).clamp(-1, 1)
    scores = image_metrics(pred, target, None)
    for i in range(2):
        a = np.round((pred[i].numpy() + 1) * 127.5)
        b = np.round((target[i].numpy() + 1) * 127.5)
        want = 10 * math.log10(255**2 / np.mean((a - b) ** 2))
        assert abs(scores["psnr"][i].item() - want) < 1e-3
    assert torch.allclose(image_metrics(target, target, None)["ssim"], torch.ones(2))
    assert torch.equal(
        quantize(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 128 / 255, 1.0])
    )


def test_warping_error_of_a_translation_and_of_two_flat_frames():
    """A texture moving 2 px left per frame, with the true flow +2: the warp is an index shift
    with the border clamped, so the error is computed here by slicing. Two flat frames with
    zero flow: the error is their 8-bit difference."""
    from vfi.metrics import warping_error

    g = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 24, 40, generator=g) * 2 - 1
    frames = torch.stack([texture[..., 8 - 2 * j : 32 - 2 * j] for j in range(3)])
    fw = torch.zeros(2, 1, 2, 24, 24)
    fw[:, :, 0] = 2.0  # frame j at p shows what frame j+1 shows at p + 2
    columns = torch.arange(24).add(2).clamp(max=23)
    expected = torch.stack(
        [(quantize(frames[j]) - quantize(frames[j + 1])[..., columns]).abs().mean() for j in (0, 1)]
    ).mean()
    torch.testing.assert_close(warping_error(frames, fw, -fw), expected.view(1))
    flat = torch.stack([torch.full((2, 3, 8, 8), v) for v in (0.0, 0.5)])
    zero = torch.zeros(1, 2, 2, 8, 8)
    expected = abs(quantize(torch.tensor(0.0)) - quantize(torch.tensor(0.5)))
    torch.testing.assert_close(warping_error(flat, zero, zero), expected.expand(2))


def test_lpips_on_frames_too_small_for_alexnet_is_a_clear_error():
    from vfi.errors import VFIError
    from vfi.metrics import image_metrics

    x = torch.zeros(1, 3, 30, 64)
    with pytest.raises(
        VFIError, match="LPIPS \\(AlexNet\\) needs frames of at least 31x31 pixels, got 30x64"
    ):
        image_metrics(x, x, torch.nn.Identity())
    assert set(image_metrics(x, x, None)) == {"psnr", "ssim"}


def test_ssim_matches_scikit_image():
    """torchmetrics' Gaussian SSIM on the 8-bit grid against scikit-image's reference
    (gaussian_weights, sigma 1.5, population covariance), per image and channel-averaged."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 48, 40, generator=g) * 2 - 1
    pred = (target + 0.15 * torch.randn(2, 3, 48, 40, generator=g)).clamp(-1, 1)
    ours = image_metrics(pred, target, None)["ssim"]
    for i in range(2):
        a, b = (quantize(x[i]).permute(1, 2, 0).double().numpy() for x in (pred, target))
        want = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=2,
        )  # fmt: skip
        assert abs(ours[i].item() - want) < 1e-3


def test_ause_hand_worked_example_and_zero():
    """Errors 1, 2, 3, 4 with uncertainties 4, 3, 1, 2, fractions 0, 1/4, 1/2, 3/4: removing
    by uncertainty leaves means 2.5, 3, 3.5, 3; the oracle 2.5, 2, 1.5, 1; the trapezoid area
    of the gaps 0, 1, 2, 2 at spacing 1/4 is 1/4 (1/2 + 3/2 + 2) = 1."""
    from vfi.metrics import ause

    error = torch.tensor([1.0, 2, 3, 4])
    fractions = torch.tensor([0, 0.25, 0.5, 0.75])
    area, curve, oracle = ause(error, torch.tensor([4.0, 3, 1, 2]), fractions)
    assert curve.tolist() == [2.5, 3, 3.5, 3] and oracle.tolist() == [2.5, 2, 1.5, 1]
    assert area.item() == pytest.approx(1.0)
    assert ause(error, error, fractions)[0].item() == 0
    assert ause(error, 10 * error + 1, fractions)[0].item() == 0  # any increasing map
    g = torch.Generator().manual_seed(0)
    e = torch.rand(1000, generator=g)
    assert ause(e, torch.rand(1000, generator=g))[0] > 0.05  # random ranking: well above 0


def test_uncertainty_metrics_against_scipy_and_the_gaussian_band():
    from scipy.stats import spearmanr

    from vfi.metrics import uncertainty_metrics

    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 40, 40, generator=g) * 2 - 1
    std = 0.02 + torch.rand(2, 3, 40, 40, generator=g) * 0.2
    mean = target + std * torch.randn(2, 3, 40, 40, generator=g)
    scores, curves, oracles = uncertainty_metrics(mean, std, target)
    assert curves.shape == oracles.shape == (2, 100)
    for i in range(2):
        err = (mean[i] - target[i]).abs().mean(0).flatten().numpy()
        unc = std[i].mean(0).flatten().numpy()
        assert scores["spearman"][i].item() == pytest.approx(spearmanr(unc, err)[0], abs=1e-5)
    # Gaussian errors: P(|z| <= 2) = erf(2 / sqrt(2)) = 0.9545 (4800 values per item)
    assert torch.allclose(scores["coverage2"], torch.tensor(math.erf(2 / math.sqrt(2))), atol=0.01)


def test_sparsification_follows_the_errors_device():
    """The default fractions live on the CPU; the curves follow the error's device (here the
    meta device, which like CUDA refuses to mix with CPU tensors)."""
    from vfi.metrics import ause

    error = torch.rand(64, dtype=torch.float64, device="meta")
    area, curve, oracle = ause(error, error)
    assert curve.device.type == "meta" and oracle.shape == (100,) and area.device.type == "meta"


# two-sided 95% Student-t quantiles t_{0.975, df} from the tables
T_975 = {2: 4.302652729911275, 7: 2.364624251592785, 8: 2.306004135204166}


def t_interval(diff: list[float]) -> tuple[float, float]:
    """mean(d) -+ t_{0.975, N - 1} s / sqrt(N), s the sample std of d, with numpy."""
    d = np.asarray(diff, dtype=np.float64)
    half = T_975[len(d) - 1] * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def test_paired_difference_is_the_t_interval_of_the_item_differences():
    from vfi.metrics import paired_difference

    a = [34.1, 35.0, 29.7, 41.2, 38.3, 30.05, 33.3, 36.9]
    b = [34.0, 35.2, 29.5, 41.0, 38.3, 30.0, 33.6, 36.5]
    diff = [x - y for x, y in zip(a, b, strict=True)]
    got = paired_difference(a, b, "psnr")
    assert got["mean"] == pytest.approx(np.mean(diff)) and got["n"] == 8
    assert (got["low"], got["high"]) == pytest.approx(t_interval(diff), rel=1e-9)
    assert got["won"] == 5  # higher PSNR on 5 items, lower on 2, a tie on one
    assert paired_difference(a, b, "lpips")["won"] == 2  # lower is better for LPIPS
    one = paired_difference([0.02], [0.03], "lpips")
    assert (one["mean"], one["low"], one["high"], one["won"]) == (
        pytest.approx(-0.01),
        None,
        None,
        1,
    )
    same = paired_difference([1.0, 2.0], [0.5, 1.5], "psnr")  # identical differences: no spread
    assert (same["low"], same["high"], same["won"]) == (None, None, 2)
    with pytest.raises(ValueError, match="two equal, non-empty lists"):
        paired_difference([1.0], [1.0, 2.0], "psnr")
