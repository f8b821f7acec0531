"""vfi.nets.flow.VisibilityNet at full and reduced resolution (``unshuffle``)."""

import pytest
import torch

from vfi.errors import VFIError
from vfi.nets.flow import VisibilityNet


def space_to_depth(x: torch.Tensor, r: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C r^2, H/r, W/r], channel c r^2 + i r + j holding pixel (r y + i,
    r x + j) of channel c (written out with view/permute)."""
    b, c, h, w = x.shape
    return (
        x.view(b, c, h // r, r, w // r, r).permute(0, 1, 3, 5, 2, 4).reshape(b, -1, h // r, w // r)
    )


def depth_to_space(x: torch.Tensor, r: int) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`."""
    b, c, h, w = x.shape
    return x.view(b, c // r**2, r, r, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, -1, h * r, w * r)


def test_unshuffled_visibility_is_the_conv_stack_on_rearranged_pixels():
    """unshuffle = 2: the convolutions see the 2 x 2 blocks of the 11 input maps (frames,
    bounded flows, tau) as 44 channels at half size, and their logits are put back the same
    way before the sigmoid."""
    torch.manual_seed(0)
    net = VisibilityNet(width=8, depth=1, unshuffle=2).eval()
    torch.nn.init.normal_(net.head.weight, std=0.1)  # it starts at zero
    w0, w1 = torch.randn(2, 3, 12, 20), torch.randn(2, 3, 12, 20)
    f0, f1 = 5 * torch.randn(2, 2, 12, 20), 5 * torch.randn(2, 2, 12, 20)
    tau = torch.tensor([0.25, 0.5])
    flows = torch.cat([f0, f1], 1)
    tau_map = tau.view(2, 1, 1, 1).expand(2, 1, 12, 20)
    x = torch.cat([w0, w1, flows / (flows.abs() + 4.0), tau_map], 1)
    with torch.no_grad():
        logits = depth_to_space(net.head(net.body(space_to_depth(x, 2))), 2)
        v0, v1 = net(w0, w1, f0, f1, tau)
    torch.testing.assert_close(torch.cat([v0, v1], 1), torch.sigmoid(logits))
    assert float((v0 - 0.5).abs().max()) > 0.01 and net.multiple == 2


def test_visibility_starts_at_one_half_and_refuses_a_bad_factor():
    net = VisibilityNet(width=8, depth=1, confidence=True, unshuffle=2)
    v0, v1, logit = net(*torch.rand(2, 1, 3, 8, 8), *torch.rand(2, 1, 2, 8, 8), torch.rand(1))
    assert torch.equal(v0, torch.full((1, 1, 8, 8), 0.5)) and torch.equal(v1, v0)
    assert torch.equal(logit, torch.zeros(1, 1, 8, 8))
    with pytest.raises(VFIError, match="unshuffle must be a positive integer, got 0"):
        VisibilityNet(unshuffle=0)


def test_symmetric_visibility_is_the_mean_over_the_pair_and_its_reversal():
    """symmetric=True: the logits are the mean of the plain net's on (w0, w1, f0, f1, tau)
    and, roles swapped back, on (w1, w0, f1, f0, 1 - tau), so the reversed pair gets exactly
    the maps swapped; the confidence logit is averaged as it is."""
    torch.manual_seed(0)
    net = VisibilityNet(width=8, depth=1, confidence=True, unshuffle=2).eval()
    torch.nn.init.normal_(net.head.weight, std=0.1)  # it starts at zero
    sym = VisibilityNet(width=8, depth=1, confidence=True, unshuffle=2, symmetric=True).eval()
    sym.load_state_dict(net.state_dict())
    w0, w1 = torch.randn(2, 3, 12, 20), torch.randn(2, 3, 12, 20)
    f0, f1 = 5 * torch.randn(2, 2, 12, 20), 5 * torch.randn(2, 2, 12, 20)
    tau = torch.tensor([0.25, 0.5])
    with torch.no_grad():
        a0, a1, ac = net(w0, w1, f0, f1, tau)
        b1, b0, bc = net(w1, w0, f1, f0, 1 - tau)
        s0, s1, sc = sym(w0, w1, f0, f1, tau)
        r1, r0, rc = sym(w1, w0, f1, f0, 1 - tau)
    logit = torch.logit
    torch.testing.assert_close(logit(s0), (logit(a0) + logit(b0)) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(logit(s1), (logit(a1) + logit(b1)) / 2, atol=1e-5, rtol=0)
    torch.testing.assert_close(sc, (ac + bc) / 2, atol=1e-6, rtol=0)
    assert torch.equal(s0, r0) and torch.equal(s1, r1) and torch.equal(sc, rc)
    assert float((a0 - b0).abs().max()) > 0.01  # the plain net is not symmetric
