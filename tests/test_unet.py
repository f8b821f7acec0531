"""vfi.nets.unet.UNet: the refiners' U-Net, at full or reduced resolution (``unshuffle``)."""

import pytest
import torch
import torch.nn.functional as F

from vfi.nets.unet import UNet


def _net(unshuffle, in_channels=5, out_channels=3):
    torch.manual_seed(0)
    net = UNet(in_channels, out_channels, 8, [1, 2], emb_dim=16, unshuffle=unshuffle)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)  # it starts at zero
    return net.eval()


def test_unshuffled_net_is_the_full_resolution_net_on_rearranged_pixels():
    """unshuffle = 2 is a full-resolution U-Net with 4x the channels, fed the 2 x 2 blocks
    as channels and its output put back the same way (torch's pixel_(un)shuffle)."""
    half = _net(2)
    full = UNet(20, 12, 8, [1, 2], emb_dim=16).eval()
    full.load_state_dict(half.state_dict())
    x, t, tau = torch.randn(2, 5, 24, 40), torch.tensor([3.0, 7.0]), torch.tensor([0.2, 0.6])
    with torch.no_grad():
        expected = F.pixel_shuffle(full(F.pixel_unshuffle(x, 2), t, tau), 2)
        torch.testing.assert_close(half(x, t, tau), expected)
    assert half.multiple == 4 and full.multiple == 2


def test_output_starts_at_zero_and_sizes_must_divide():
    net = UNet(5, 3, 8, [1, 2], emb_dim=16, unshuffle=2)
    with torch.no_grad():
        assert torch.equal(
            net(torch.randn(1, 5, 8, 12), torch.ones(1), torch.ones(1)), torch.zeros(1, 3, 8, 12)
        )
    with pytest.raises(ValueError, match="divide by 4"):
        net(torch.randn(1, 5, 30, 32), torch.ones(1), torch.ones(1))


def test_a_float64_net_computes_in_float64():
    """Every tensor follows the weights' dtype: the float64 copy of a net (integer steps, float
    times) returns float64, equal to the float32 net's output to float32 precision."""
    torch.manual_seed(0)
    net = UNet(6, 3, base_channels=8, channel_mult=[1, 2], num_res_blocks=1, emb_dim=16)
    for p in net.parameters():  # away from the zero-initialised output
        torch.nn.init.normal_(p, std=0.1)
    x, t, tau = torch.randn(2, 6, 16, 16), torch.tensor([1, 3]), torch.tensor([0.25, 0.5])
    want = net(x, t, tau)
    got = net.double()(x.double(), t, tau.double())
    assert got.dtype == torch.float64
    assert torch.allclose(got.float(), want, atol=1e-4) and float(want.abs().max()) > 0.1
