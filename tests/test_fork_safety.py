"""No FFmpeg thread pool outlives its use: DataLoader workers fork from processes that decoded
or wrote video, and a worker that uses or frees a pool forked without its threads waits forever."""

import os
from fractions import Fraction
from pathlib import Path

import av
import fabricate
import numpy as np
import pytest

from vfi.data.video import open_video, rgb
from vfi.interpolate import VideoWriter

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="lists threads in /proc"
)


def thread_ids() -> set[str]:
    """The native threads of this process (Python's and the libraries')."""
    return set(os.listdir("/proc/self/task"))


def test_decoding_leaves_no_ffmpeg_thread_pool_to_fork(tmp_path):
    """open_video and rgb decode and convert on the calling thread: no decoder's or
    converter's pool is left (PyAV's defaults leave both). The stream test with two workers
    in test_benchmarks hung on such a pool."""
    path = fabricate.video(tmp_path / "a.mkv", count=4)
    before = thread_ids()
    with av.open(str(path)) as container:  # PyAV's defaults: a pool per core count
        default = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        with_defaults = thread_ids() - before
    before = thread_ids()
    with open_video(path) as container:
        frames = [rgb(f) for f in container.decode(video=0)]
        ours = thread_ids() - before
    assert [int(f.float().mean().round()) for f in frames] == [0, 10, 20, 30]
    assert all(
        (f.permute(1, 2, 0).numpy() == d).all() for f, d in zip(frames, default, strict=True)
    )
    assert ours == set()
    if len(os.sched_getaffinity(0)) > 1:  # the check can see FFmpeg's threads
        assert len(with_defaults) >= 2


@pytest.mark.parametrize("end", ["close", "abort"])
def test_a_finished_writer_holds_no_encoder_threads(tmp_path, end):
    """x264 and its converter run threads while writing; once the writer is closed or aborted
    they are gone, though the writer object lives on (as in an exception's traceback)."""
    before = thread_ids()
    writer = VideoWriter(tmp_path / "out.mp4", Fraction(25), 64, 48, crf=18)
    for level in (0, 128):
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writing = thread_ids() - before
    getattr(writer, end)()
    assert thread_ids() - before == set()
    assert (tmp_path / "out.mp4").is_file() == (end == "close")
    if end == "close":
        with open_video(tmp_path / "out.mp4") as container:
            frames = [rgb(f) for f in container.decode(video=0)]
        assert [round(float(f.float().mean())) for f in frames] == [0, 128]
    if len(os.sched_getaffinity(0)) > 1:  # the check can see the encoder's threads
        assert writing
