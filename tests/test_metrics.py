"""Metrics against published reference values and closed forms."""

import math

import numpy as np
import pytest
import torch
from conftest import ALEXNET, SHARED
from PIL import Image

from vfi.errors import VFIError
from vfi.metrics import image_metrics, load_lpips, quantize


def _load(name):
    im = np.asarray(Image.open(SHARED / "lpips_ref" / name).convert("RGB"))
    return torch.from_numpy(im.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


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
