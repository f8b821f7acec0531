"""A corrupt item in the middle of a streamed training epoch ends the run with one line that
names the file, exit 2 (data=video, data=shards; the folder layouts: tests/test_benchmarks.py)."""

import shutil

import fabricate
import numpy as np
import pytest
from conftest import task_error
from test_shards import CONVERT, shards, vimeo  # noqa: F401 (fixtures)

TRAIN = ["model=resshift", "trainer=debug", "trainer.max_steps=40", "trainer.limit_val_batches=0"]
TRAIN += ["data.batch_size=2", "data.num_workers=1", "logger=none"]
TRAIN += ["data.train.augment.crop=[16,16]"]


def damage(path, at: float, count: int = 300) -> None:
    """Overwrite `count` bytes of a file at the share `at` of its length with noise."""
    data = bytearray(path.read_bytes())
    k = int(len(data) * at)
    data[k : k + count] = np.random.default_rng(0).integers(0, 256, count, np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_video_that_breaks_mid_stream_is_one_line(task_env, tmp_path, capsys):
    good = fabricate.video(tmp_path / "a.mkv", count=25)
    bad = fabricate.video(tmp_path / "b.mkv", count=25)
    damage(bad, 0.6)  # its first half decodes, then the data is invalid
    args = [*TRAIN, "data=video", f"data.root=[{good},{bad}]"]
    line = task_error("vfi.train", args, tmp_path / "run", capsys)
    assert line == f"vfi.train: error: cannot decode video file {bad}: " + line.split(": ")[-1]
    assert "Invalid data" in line


@pytest.mark.slow
def test_a_damaged_shard_chunk_is_one_line(task_env, shards, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "shards"
    shutil.copytree(shards, root)
    chunk = sorted((root / "train").glob("chunk-*.bin"))[3]
    damage(chunk, 0.5, 2000)
    args = [*TRAIN, "data=shards", f"data.root={root}"]
    line = task_error("vfi.train", args, tmp_path / "run", capsys)
    assert f"cannot read shard {root}/train/{chunk.name} (" in line, line
    assert "convert it again" in line
