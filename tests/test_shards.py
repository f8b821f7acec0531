"""Sharded streaming data: vfi.data.convert writes litdata shards of a benchmark (resumable,
never a half-written chunk under its final name), data=shards streams them back item for
item, both models train from them, and under DDP every item is taken once per epoch."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import fabricate
import pytest
import torch
from conftest import REPO, one_line, psnr_of, run_cli, run_task, stop_midway, task_error

from vfi.data import benchmarks
from vfi.data.shards import read_index, shard_dataset, write_shards
from vfi.errors import VFIError

NUM_TRAIN = 16
CONVERT = ["data=vimeo90k", "data.variant=septuplet", "chunk_items=2"]


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory) -> Path:
    """A fabricated Vimeo-90K septuplet tree: 16 training and 2 test sequences of 37x50."""
    return fabricate.vimeo90k(tmp_path_factory.mktemp("vimeo"), True, num_train=NUM_TRAIN)


@pytest.fixture(scope="module")
def shards(vimeo, tmp_path_factory) -> Path:
    """The tree converted by vfi.data.convert (PNG, 2 items per chunk)."""
    out = tmp_path_factory.mktemp("shards") / "vimeo"
    run_task("vfi.data.convert", [*CONVERT, f"data.root={vimeo}", f"out={out}"], out.parent / "run")
    return out


def same_items(a: dict, b: dict) -> bool:
    return a["id"] == b["id"] and all(torch.equal(a[k], b[k]) for k in ("I0", "gt", "I1", "taus"))


def test_shards_hold_each_split_item_for_item(vimeo, shards):
    """Every split streams back, in order and without augmentation, exactly the items the
    folder reader gives (PNG is lossless); the index says what it holds."""
    for split, listed in (("train", "train"), ("val", "test"), ("test", "test")):
        folder = benchmarks.vimeo90k(str(vimeo), listed, "septuplet")
        streamed = shard_dataset(str(shards), split)
        assert len(streamed) == len(folder)
        assert all(same_items(streamed[i], folder[i]) for i in range(len(folder)))
        meta = read_index(str(shards / split))["vfi"]
        assert meta["num_items"] == len(folder) and meta["source"] == f"vimeo90k:{split}"
    chunks = sorted(p.name for p in (shards / "train").glob("chunk-*.bin"))
    assert len(chunks) == NUM_TRAIN // 2 and not (shards / "train" / ".convert").exists()


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_raw_is_exact_and_jpeg_keeps_the_frames(vimeo, tmp_path, encoding):
    folder = benchmarks.vimeo90k(str(vimeo), "test", "septuplet")
    write_shards(folder, str(tmp_path / "test"), encoding=encoding, chunk_items=1)
    streamed = shard_dataset(str(tmp_path), "test")
    for i in range(len(folder)):
        a, b = streamed[i], folder[i]
        if encoding == "raw":
            assert same_items(a, b)
        else:  # flat frames: JPEG keeps each frame's grey level
            levels = [fabricate.level(f) for f in (b["I0"], *b["gt"], b["I1"])]
            assert [fabricate.level(f) for f in (a["I0"], *a["gt"], a["I1"])] == levels


class Interrupted(Exception):
    pass


class Reads(torch.utils.data.Dataset):
    """A dataset that records which items were read and can stop the run at one of them."""

    def __init__(self, inner, stop_at: int | None = None):
        self.inner, self.stop_at, self.read = inner, stop_at, []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == self.stop_at:
            raise Interrupted
        self.read.append(i)
        return self.inner[i]


def test_interrupted_convert_resumes_after_its_last_whole_chunk(vimeo, tmp_path, capsys):
    folder = benchmarks.vimeo90k(str(vimeo), "train", "septuplet")
    out = tmp_path / "train"
    with pytest.raises(Interrupted):
        write_shards(Reads(folder, stop_at=5), str(out), chunk_items=2)
    # chunks 0 and 1 (items 0-3) are in place; chunk 2 (items 4, 5) only in scratch
    final = sorted(p.name for p in out.glob("chunk-*.bin"))
    assert final == ["chunk-0-0.bin", "chunk-0-1.bin"] and not (out / "index.json").exists()
    stamps = {name: (out / name).stat().st_mtime_ns for name in final}
    args = ["data=shards", f"data.root={tmp_path}", "trainer.fast_dev_run=true"]
    line = task_error("vfi.train", args, tmp_path / "run", capsys)
    assert "unfinished conversion" in line and str(out) in line
    # another encoding would mix formats: refused
    with pytest.raises(VFIError, match="other settings \\(encoding\\)"):
        write_shards(folder, str(out), encoding="jpeg", chunk_items=2)
    rerun = Reads(folder)
    write_shards(rerun, str(out), chunk_items=2)
    assert rerun.read == list(range(4, NUM_TRAIN))
    assert {name: (out / name).stat().st_mtime_ns for name in final} == stamps
    streamed = shard_dataset(str(tmp_path), "train")
    assert all(same_items(streamed[i], folder[i]) for i in range(len(folder)))
    assert sorted(os.listdir(out)) == sorted(
        [f"chunk-0-{c}.bin" for c in range(NUM_TRAIN // 2)] + ["index.json"]
    )


def test_bad_shard_folders_and_outputs_get_one_line(shards, vimeo, tmp_path, capsys):
    def train_error(root) -> str:
        args = ["data=shards", f"data.root={root}", "trainer.fast_dev_run=true", "logger=none"]
        return task_error("vfi.train", args, tmp_path / "run", capsys)

    assert "not found" in train_error(tmp_path / "nowhere")
    (tmp_path / "plain" / "train").mkdir(parents=True)
    assert "not a vfi shard set (no index.json)" in train_error(tmp_path / "plain")
    foreign = tmp_path / "foreign" / "train"  # litdata chunks without the vfi entry
    foreign.mkdir(parents=True)
    index = json.loads((shards / "train" / "index.json").read_text())
    del index["vfi"]
    (foreign / "index.json").write_text(json.dumps(index))
    assert "holds no vfi shard set" in train_error(tmp_path / "foreign")

    convert = [*CONVERT, f"data.root={vimeo}"]
    before = (shards / "train" / "index.json").read_bytes()
    line = task_error("vfi.data.convert", [*convert, f"out={shards}"], tmp_path / "run", capsys)
    assert (
        "already holds a shard set" in line
        and (shards / "train" / "index.json").read_bytes() == before
    )
    (tmp_path / "busy" / "train").mkdir(parents=True)
    (tmp_path / "busy" / "train" / "notes.txt").write_text("mine")
    line = task_error(
        "vfi.data.convert", [*convert, f"out={tmp_path / 'busy'}"], tmp_path / "run", capsys
    )
    assert (
        "non-empty folder" in line
        and (tmp_path / "busy" / "train" / "notes.txt").read_text() == "mine"
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resshift", "warp_posterior"])
def test_both_models_train_from_shards(task_env, shards, tmp_path, capsys, tested_frames, model):
    args = [
        f"model={model}", "data=shards", f"data.root={shards}", "data.train.augment.crop=[32,32]",
        "trainer.fast_dev_run=true", "data.batch_size=2", "data.num_workers=0", "logger=none",
    ]  # fmt: skip
    metrics = run_task("vfi.train", args, tmp_path / "run")
    assert "test/psnr" in capsys.readouterr().out
    # the reported score is that of the frames the test steps produced, recomputed here
    assert metrics["test/psnr"] == pytest.approx(psnr_of(tested_frames), abs=1e-3)


@pytest.mark.slow
def test_ddp_with_two_workers_per_rank_takes_every_item_once_per_epoch(
    cli_env, vimeo, shards, tmp_path
):
    """trainer=ddp_sim (2 processes), 2 DataLoader workers each, 2 epochs of the 16 items in
    batches of 2 per rank: the ranks' batches of an epoch hold every item exactly once, and
    the second epoch is shuffled differently."""
    seen = tmp_path / "seen"
    env = dict(cli_env, PYTHONPATH=str(REPO / "tests"))
    run_cli(
        "vfi.train", "model=resshift", "trainer=ddp_sim", "data=shards", f"data.root={shards}",
        "data.train.augment.crop=[16,16]", "data.batch_size=4", "data.num_workers=2",
        "trainer.max_steps=-1", "+trainer.max_epochs=2", "trainer.limit_val_batches=0",
        "trainer.limit_test_batches=1", "logger=none",
        "+callbacks.seen._target_=seen_items.SeenItems", f"+callbacks.seen.out={seen}",
        env=env, timeout=300,
    )  # fmt: skip
    rows = [json.loads(line) for rank in (0, 1) for line in open(seen / f"rank{rank}.jsonl")]
    train = {r.id for r in benchmarks.vimeo90k(str(vimeo), "train", "septuplet").records}
    orders = []
    for epoch in (0, 1):
        ids = [i for row in rows if row["epoch"] == epoch for i in row["ids"]]
        assert len(ids) == NUM_TRAIN and set(ids) == train, ids
        orders.append(ids)
    assert set(orders[0]) == set(orders[1]) and orders[0] != orders[1]


class FolderBucket:
    """A stand-in for litdata's S3 provider: ``s3://bucket/<key>`` is ``root/<key>``; it logs
    the uploads in order."""

    def __init__(self, root: Path):
        self.root, self.uploads = root, []

    def local(self, url: str) -> Path:
        return self.root / url.removeprefix("s3://bucket/")

    def upload_file(self, local_path: str, remote_path: str) -> None:
        self.local(remote_path).parent.mkdir(parents=True, exist_ok=True)
        self.local(remote_path).write_bytes(Path(local_path).read_bytes())
        self.uploads.append(remote_path)

    def download_file(self, remote_path: str, local_path: str) -> None:
        Path(local_path).write_bytes(self.local(remote_path).read_bytes())

    def exists(self, remote_path: str) -> bool:
        return self.local(remote_path).is_file()


def test_remote_out_is_built_locally_then_uploaded_index_last(vimeo, tmp_path, monkeypatch):
    bucket = FolderBucket(tmp_path / "bucket")
    monkeypatch.setattr("litdata.streaming.fs_provider._get_fs_provider", lambda url: bucket)
    folder = benchmarks.vimeo90k(str(vimeo), "test", "septuplet")
    url = "s3://bucket/vimeo/test"
    write_shards(folder, url, chunk_items=1, staging=str(tmp_path / "staging"))
    assert bucket.uploads == [f"{url}/chunk-0-0.bin", f"{url}/chunk-0-1.bin", f"{url}/index.json"]
    assert read_index(url)["vfi"]["num_items"] == 2
    streamed = shard_dataset(str(tmp_path / "bucket" / "vimeo"), "test")  # the uploaded files
    assert all(same_items(streamed[i], folder[i]) for i in range(len(folder)))
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())
    with pytest.raises(VFIError, match="cannot read s3://bucket/nothing/index.json"):
        read_index("s3://bucket/nothing")
    with pytest.raises(VFIError, match="already holds a shard set"):
        write_shards(folder, url, chunk_items=1, staging=str(tmp_path / "staging"))


@pytest.mark.slow
def test_resume_mid_epoch_continues_the_shard_stream(task_env, vimeo, shards, tmp_path):
    """Lightning saves the litdata loader's position in the checkpoint: 2 steps, then a resume
    to 8 steps (one epoch of 16 items in batches of 2) takes the 12 items not yet seen."""
    seen = tmp_path / "seen"
    args = [
        "model=resshift", "data=shards", f"data.root={shards}", "data.train.augment.crop=[16,16]",
        "trainer=debug", "data.batch_size=2", "data.num_workers=2", "logger=none",
        "+callbacks.seen._target_=seen_items.SeenItems", f"+callbacks.seen.out={seen}",
    ]  # fmt: skip
    run_task("vfi.train", args, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    run_task("vfi.train", [*args, f"ckpt_path={ckpt}", "trainer.max_steps=8"], tmp_path / "run2")
    rows = [json.loads(line) for line in open(seen / "rank0.jsonl")]
    ids = [i for row in rows for i in row["ids"]]
    train = {r.id for r in benchmarks.vimeo90k(str(vimeo), "train", "septuplet").records}
    assert len(rows) == 8 and len(ids) == NUM_TRAIN and set(ids) == train, rows


def test_convert_on_a_full_disk_names_the_chunk_and_resumes(vimeo, cli_env, tmp_path):
    """vfi.data.convert under a file-size limit smaller than one chunk (a disk that fills up):
    one line that names the output, exit 2, no chunk or temporary under a final name; rerun
    with room to write, the same command continues and gives every item."""
    import resource

    out = tmp_path / "vimeo"
    args = [*CONVERT[:2], "chunk_items=8", f"data.root={vimeo}", f"out={out}", "num_workers=0",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2**12,) * 2)  # noqa: E731
    command = [sys.executable, "-m", "vfi.data.convert", *args]
    proc = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True,
                          preexec_fn=limit, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert (
        line.startswith(f"vfi.data.convert: error: cannot write {out}") and "File too large" in line
    ), line
    assert not list(out.rglob("index.json")) and not list(out.rglob("scratch-*"))
    run_cli("vfi.data.convert", *args, env=cli_env)
    folder = benchmarks.vimeo90k(str(vimeo), "train", "septuplet")
    streamed = shard_dataset(str(out), "train")
    assert len(streamed) == len(folder) == NUM_TRAIN
    assert all(same_items(streamed[i], folder[i]) for i in range(len(folder)))


def test_eval_resume_on_a_stream_counts_each_item_once(task_env, shards, tmp_path):
    """vfi.eval resume= on a shard stream (an IterableDataset, which cannot skip the items
    already scored) after an interruption that left half the rows: the stream is scored anew,
    so the means and rows equal an uninterrupted run's, each item counted once."""
    args = ["model=blend", "data=shards", f"data.root={shards}", "motion_bins=null"]
    whole = tmp_path / "whole"
    run_task("vfi.eval", args, whole)
    (log,) = (whole / "items").glob("*.jsonl")
    rows = log.read_text().splitlines()
    expected = json.loads((whole / "metrics.json").read_text())["results"][0]["metrics"]
    log.write_text("\n".join(rows[: len(rows) // 2]) + "\n")  # interrupted half-way
    run_task("vfi.eval", [*args, f"resume={whole}"], tmp_path / "x")
    ids = lambda lines: sorted(json.loads(line)["id"] for line in lines)  # noqa: E731
    assert ids(log.read_text().splitlines()) == ids(rows)
    got = json.loads((whole / "metrics.json").read_text())["results"][0]["metrics"]
    for name in ("test/psnr", "test/ssim", "test/lpips"):
        assert got[name] == pytest.approx(expected[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_convert_exits_128_plus_the_signal_and_resumes(cli_env, tmp_path, stop):
    """Ctrl-C or SIGTERM while vfi.data.convert writes chunks: exit 130 / 143 with no
    traceback and no index (the shards are not readable yet); the same after kill -9. The same
    command again finishes the conversion, and the shards hold every item once, item for
    item."""
    tree = fabricate.vimeo90k(tmp_path / "vimeo", True, num_train=400)
    out = tmp_path / "shards"
    args = [*CONVERT, f"data.root={tree}", f"out={out}"]
    code, stderr = stop_midway(
        "vfi.data.convert", *args, f"hydra.run.dir={tmp_path / 'a'}", env=cli_env,
        ready=lambda: bool(list(out.glob("train/chunk-*.bin"))), stop=stop,
    )  # fmt: skip
    assert code == (-stop if stop == signal.SIGKILL else 128 + stop), stderr
    assert "Traceback" not in stderr and not (out / "train" / "index.json").exists()
    run_cli("vfi.data.convert", *args, f"hydra.run.dir={tmp_path / 'b'}", env=cli_env)
    folder = benchmarks.vimeo90k(str(tree), "train", "septuplet")
    streamed = shard_dataset(str(out), "train")
    assert len(streamed) == len(folder) == 400
    assert all(same_items(streamed[i], folder[i]) for i in range(0, 400, 37))
    ids = [streamed[i]["id"] for i in range(400)]
    assert sorted(ids) == sorted(folder[i]["id"] for i in range(400))  # each item once
