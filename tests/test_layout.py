"""vfi.nets.layout: the block rearrangement the reduced-resolution networks run on."""

import pytest
import torch
import torch.nn.functional as F

from vfi.nets.layout import from_blocks, to_blocks


@pytest.mark.parametrize("r", [1, 2, 4])
def test_to_blocks_is_pixel_unshuffle_in_channels_last_layout(r):
    x = torch.randn(2, 5, 8 * r, 12 * r)
    for source in (x, x.transpose(-1, -2).contiguous().transpose(-1, -2)):  # any strides
        blocks = to_blocks(source, r)
        assert torch.equal(blocks, F.pixel_unshuffle(x, r))
        assert blocks.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(from_blocks(blocks, r), x)
    # pixel (i, j) of block (p, q), channel c, is channel c r^2 + i r + j
    assert torch.equal(to_blocks(x, r)[:, 3 * r * r + (r - 1) * r, 2, 1], x[:, 3, 2 * r + r - 1, r])


def test_to_blocks_gradient_is_the_rearranged_gradient():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    weight = torch.randn(1, 12, 4, 4)
    (to_blocks(x, 2) * weight).sum().backward()
    assert torch.equal(x.grad, F.pixel_shuffle(weight, 2))


def test_to_blocks_rejects_a_size_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide into 4 x 4 blocks"):
        to_blocks(torch.zeros(1, 3, 10, 16), 4)
