"""The entry points end to end, as subprocesses: errors, runs, sweeps, DDP, W&B, resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fabricate
import numpy as np
import pytest
import torch
import yaml
from conftest import (
    REPO,
    needs_shared,
    one_line,
    psnr_of,
    run_cli,
    run_task,
    stop_midway,
    task_error,
)
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vfi.errors import VFIError
from vfi.models.checkpoint import model_from_checkpoint
from vfi.utils.checkpoint import RELEASE_CHECKPOINT
from vfi.utils.run import CONF_DIR

pytestmark = pytest.mark.slow
# 32 px training items; validation and test on 64 px centre crops of the clips
TINY_DATA = [
    "data=flying",
    "data.train.size=[32,32]",
    "data.batch_size=2",
    "data.num_workers=0",
    "+data.val.crop=[64,64]",
    "+data.test.crop=[64,64]",
]
TINY = ["model=resshift", *TINY_DATA]


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = one_line(proc.stderr)
    assert "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in line, line


def _runs(env, task="train"):
    return sorted((Path(env["VFI_LOG_DIR"]) / task).glob("runs/*"))


def test_bad_input_gets_one_line_from_the_command_line(cli_env):
    """The real process: exit status 2, one line on stderr."""
    proc = run_cli("vfi.train", "model=resshfit", env=cli_env, check=False)
    _one_line_error(proc, "unknown model 'resshfit'", "resshift", "blend")


@pytest.mark.parametrize(
    "module,args,needles",
    [
        ("vfi.train", ["data=atd99"], ["unknown data 'atd99'", "flying", "clips"]),
        ("vfi.eval", ["model=blend,nope", "data=clips"], ["unknown model 'nope'"]),
        (
            "vfi.eval",
            ["ckpt_path=/no/such/file.ckpt"],
            ["checkpoint not found: /no/such/file.ckpt"],
        ),
        ("vfi.train", ["trainer=debug", "ckpt_path=/no/such.ckpt"], ["checkpoint not found"]),
        (
            "vfi.train",
            ["trainer=debug", "data=flying", "data.train.tau_range=[0.5,1.5]"],
            ["tau_range must lie inside (0, 1)", "1.5"],
        ),
        ("vfi.eval", ["model=blend"], ["no test data"]),
        ("vfi.train", ["model=classical"], ["model=classical has nothing to train", "vfi.eval"]),
        (
            "vfi.eval",
            ["model=blend", "data=clips", "+data.gapp=3"],
            ["unknown data option data.gapp", "gap"],
        ),
        (
            "vfi.eval",
            ["data=clips", "motion_refresh=often"],
            ["motion_refresh must be a number of steps (1 or more) or none, got 'often'"],
        ),
        (
            "vfi.interpolate",
            ["frames=[a,b]", "flip_views=sometimes"],
            ["flip_views must be true, false or null, got 'sometimes'"],
        ),
        (
            "vfi.eval",
            ["data=clips", "sample_noise=maybe"],
            ["sample_noise must be true, false or null, got 'maybe'"],
        ),
        (
            "vfi.interpolate",
            ["frames=[a,b]", "motion_views=3"],
            ["motion_views must be an integer from 1 to 2 or null, got 3"],
        ),
        (
            "vfi.eval",
            ["model=rife", "model.views=0", "data=clips"],
            ["model.views must be an integer from 1 to 2, got 0"],
        ),
        ("vfi.eval", ["ckpt_path=release", "model=blend", "data=clips"], ["not both"]),
        ("vfi.interpolate", ["ckpt_path=release", "model=blend", "frames=[a,b]"], ["not both"]),
        (
            "vfi.train",
            ["model=warp_posterior", "model.kappa=0", "trainer=debug", "data=flying"],
            ["model.kappa must be positive, got 0"],
        ),
        ("vfi.train", ["trainer.max_step=5"], ["Could not override 'trainer.max_step'"]),
        ("vfi.train", ["data=flying", "compile=nope"], ["compile must be", "'nope'"]),
        (
            "vfi.eval",
            ["model=blend", "data=clips", "data.num_workers=-1"],
            ["data.num_workers must be an integer >= 0 or null, got -1"],
        ),
        ("vfi.train", ["data=flying", "ckpt_path=release"], ["weights only"]),
        (
            "vfi.train",
            ["model=resshift", "data=flying", "ckpt_path=release"],
            ["holds a vfi.models.warp_posterior.WarpPosteriorVFI model", "trains vfi.models"],
        ),
        ("vfi.train", ["data=flying", f"ckpt_path={REPO}/README.md"], ["cannot read checkpoint"]),
        ("vfi.eval", ["data.train.size=[32,32"], ["no viable alternative at input '[32,32'"]),
        ("vfi.interpolate", ["times=0.25,0.5"], ["Ambiguous value", "key=[value1,value2]"]),
        (
            "vfi.train",
            ["trainer=debug", "data=flying", "trainer.max_steps=abc"],
            ["trainer.max_steps must be an integer >= -1, got 'abc'"],
        ),
        (
            "vfi.train",
            ["trainer=debug", "data=flying", "trainer.precision=99"],
            ["Error in call to target 'lightning.pytorch.trainer.trainer.Trainer'", "HYDRA_FULL"],
        ),
        (
            "vfi.eval",
            ["model=blend", "data=atd12k", f"data.root={REPO / 'README.md'}"],
            ["is a file"],
        ),
        ("vfi.eval", ["model=blend", "data=atd12k"], ["missing value for data.root: give"]),
        (
            "vfi.train",
            ["trainer=debug", "data=flying", "optimized_metric=psnr"],
            ["optimized_metric must name a logged val/ or train/ metric, got 'psnr'"],
        ),
        (
            "vfi.eval",
            ["model=blend", "data=clips", f"paths.log_dir={REPO / 'README.md'}/logs"],
            ["paths.log_dir=", "README.md is a file, not a folder"],
        ),
    ],
)
def test_bad_input_gets_one_line(task_env, tmp_path, capsys, module, args, needles):
    """The entry points' tasks in-process: exit 2 with one line naming the value."""
    line = task_error(module, args, tmp_path / "run", capsys)
    assert all(needle in line for needle in needles), line


def test_runs_started_together_get_their_own_folders(cli_env):
    """Two runs launched at the same moment (here both stop at a config error) never share a
    run folder."""
    cmd = [sys.executable, "-m", "vfi.train", "data=flying", "data.train.tau_range=[0.5,2]"]
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [2, 2]
    runs = _runs(cli_env)
    assert len(runs) == 2 and all((r / ".hydra" / "config.yaml").is_file() for r in runs)


def test_too_few_training_items_is_one_line(task_env, tmp_path, capsys):
    """A folder with fewer triplets than one batch: refused before fitting (Lightning would
    stop with no training batch and the run would test untrained weights)."""
    root = fabricate.frames(tmp_path / "tiny", counts=(5,))
    args = ["model=resshift", "data=frames", f"data.root={root}", "data.batch_size=8"]
    line = task_error("vfi.train", args, tmp_path / "run", capsys)
    assert "training items, fewer than one batch (data.batch_size=8)" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_validation_taking_every_atd_clip_is_one_line(task_env, tmp_path, capsys):
    root = fabricate.atd12k(tmp_path / "atd")
    args = ["model=resshift", "data=atd12k", f"data.root={root}", "data.val_size=1000"]
    line = task_error("vfi.train", args, tmp_path / "run", capsys)
    assert "validation split (data.val_size=1000) takes every clip" in line


def test_worker_errors_are_one_line(task_env, tmp_path, capsys):
    """A corrupt image read in a DataLoader worker process: the worker's traceback stays out of
    the message."""
    root = fabricate.ucf101(tmp_path / "ucf")
    image = root / "1" / "frame_01_gt.png"
    image.write_bytes(image.read_bytes()[:40])
    args = ["model=blend", "data=ucf101", f"data.root={root}", "data.num_workers=2"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_task("vfi.eval", args, tmp_path / "run")
    err = capsys.readouterr().err  # the one line alone: no banner before it
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert one_line(err) == f"vfi.eval: error: corrupt or truncated image: {image}", err


@needs_shared
def test_crops_too_small_for_the_lpips_loss_are_one_line(task_env, tmp_path, capsys):
    """The bridge trains with an LPIPS term; AlexNet has nothing left of a 16 px crop."""
    args = ["data=flying", "data.train.size=[16,16]", "data.batch_size=2", "data.num_workers=0"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # in training: with no Lightning banner before it
        run_task("vfi.train", [*args, "trainer.fast_dev_run=true"], tmp_path / "run")
    line = one_line(capsys.readouterr().err)
    assert stop.value.code == 2
    assert "at least 31 px, got 16x16" in line and "data.train.size" in line


def test_undecodable_video_is_one_line(task_env, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    args = ["model=blend", "data=video", f"data.root={bad}"]
    line = task_error("vfi.eval", args, tmp_path / "run", capsys)
    assert "cannot decode video file" in line and str(bad) in line


CROP = "data.train.augment.crop=[16,16]"
LAYOUTS = {
    "vimeo90k": (fabricate.vimeo90k, [CROP]),
    "atd12k": (fabricate.atd12k, [CROP, "data.val_size=2"]),
    "snufilm": (fabricate.snufilm, ["data.difficulty=easy"]),
    "ucf101": (fabricate.ucf101, []),
    "middlebury": (fabricate.middlebury, []),
    "frames": (fabricate.frames, [CROP]),
    "video": (lambda root: fabricate.video(root / "clip.mkv"), [CROP]),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_fast_dev_run_on_each_layout(task_env, tmp_path, capsys, tested_frames, name):
    """model=resshift trains a step, validates and tests on every fabricated benchmark tree
    (37x50 frames: the model pads odd sizes); vfi.train in-process, without a logger. The
    reported test/psnr is that of the frames the test steps produced, recomputed here."""
    make, overrides = LAYOUTS[name]
    root = make(tmp_path / name)
    args = [
        "model=resshift", f"data={name}", f"data.root={root}", "trainer.fast_dev_run=true",
        "data.batch_size=2", "data.num_workers=0", "logger=none", *overrides,
    ]  # fmt: skip
    metrics = run_task("vfi.train", args, tmp_path / "run")
    assert "test/psnr" in capsys.readouterr().out
    assert metrics["test/psnr"] == pytest.approx(psnr_of(tested_frames), abs=1e-3)


def test_data_bench_prints_items_per_second(task_env, tmp_path, capsys):
    root = fabricate.frames(tmp_path, counts=(12,))
    args = [f"data.root={root}", CROP, "data.batch_size=2", "workers=[1,2]", "num_items=6"]
    run_task("vfi.data.bench", ["data=frames", *args], tmp_path / "run")
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "│" in line]
    assert "items/s" in out and any(line.split("│")[1].strip() == "2" for line in rows)


def test_debug_run_then_eval(cli_env):
    run_cli("vfi.train", "trainer=debug", "logger=tensorboard", *TINY, env=cli_env)
    (run,) = _runs(cli_env)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "panels").glob("test_*.png")) and list((run / "panels").glob("val_*.png"))
    metrics = json.loads((run / "metrics.json").read_text())["results"][0]["metrics"]
    assert {"test/psnr", "test/ssim", "test/lpips"} <= set(metrics)
    assert (run / "report.png").stat().st_size > 10_000
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    # the config travels as saved hyperparameters: TensorBoard has them, and Lightning's own
    # loader rebuilds the model that vfi's does
    (hparams,) = (run / "tensorboard").rglob("hparams.yaml")
    logged = yaml.safe_load(hparams.read_text())
    assert logged["choices"]["model"] == "resshift" and logged["denoiser"]["_target_"]
    from vfi.models.resshift import ResShiftVFI

    ours = model_from_checkpoint(ckpt).state_dict()
    theirs = ResShiftVFI.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert all(torch.equal(v, ours[k]) for k, v in theirs.state_dict().items())
    assert theirs.state_dict().keys() == ours.keys()
    proc = run_cli("vfi.eval", f"ckpt_path={ckpt}", "trainer.limit_test_batches=2", env=cli_env)
    (ev,) = _runs(cli_env, "eval")
    scored = json.loads((ev / "metrics.json").read_text())["results"][0]
    assert scored["data"] == "flying" and scored["metrics"]["test/psnr"] > 15
    assert "| resshift" in (ev / "results.md").read_text() and "test/psnr" in proc.stdout


def test_multirun_sweep_writes_separate_folders(cli_env):
    """Two jobs through Hydra's submitit launcher (hydra/launcher=local, each job its own
    submitit process), two folders; with logger=wandb (offline: no API key) each job finishes
    its own run (its exit is recorded), both runs share the sweep's group, and a job's run
    file holds its config (the model's hyperparameters, data and choices), the metrics, the
    panel image and the per-item test table."""
    run_cli(
        "vfi.train", "-m", "hydra/launcher=local", "trainer=debug", "model.lr=1e-4,2e-4",
        "logger=wandb", *TINY, env=cli_env,
    )  # fmt: skip
    (sweep,) = (Path(cli_env["VFI_LOG_DIR"]) / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    submitted = [p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    assert len(submitted) == 2 and all(list(p.glob("*_result.pkl")) for p in submitted)
    lrs, groups = [], set()
    for job in jobs:
        assert (job / "metrics.json").is_file()
        lrs.append(
            float((job / ".hydra" / "overrides.yaml").read_text().split("model.lr=")[1].split()[0])
        )
        (wandb_file,) = (job / "wandb").glob("offline-run-*/*.wandb")
        records = read_wandb_records(wandb_file)
        assert any(r.WhichOneof("record_type") == "exit" for r in records)
        groups.update(r.run.run_group for r in records if r.WhichOneof("record_type") == "run")
        check_wandb_history(wandb_file.parent, records)
        config = {
            item.key: json.loads(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "config"
            for item in r.config.update
        }
        # the run's config: the model's saved hyperparameters, the data config and choices
        assert config["lr"] == lrs[-1] and config["denoiser"]["_target_"] == "vfi.nets.unet.UNet"
        assert config["choices"]["data"] == "flying" and "train" in config["data"]
    assert lrs == [1e-4, 2e-4]
    assert groups == {sweep.name}


def test_optuna_sweep_returns_each_trials_best_val_psnr(cli_env):
    """hparams_search=warp_posterior with two trials: each trial returns its best val/psnr to
    the sweeper (read back here from the trial's CSV log), the sweep folder gets the best one
    and its parameters, and each trial ran with the parameters Optuna drew."""
    run_cli(
        "vfi.train", "-m", "hparams_search=warp_posterior", "hydra.sweeper.n_trials=2",
        "trainer=debug", "test=false", *TINY_DATA, env=cli_env,
    )  # fmt: skip
    (sweep,) = (Path(cli_env["VFI_LOG_DIR"]) / "train" / "multiruns").iterdir()
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scores, params = [], []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        with (job / "csv" / "metrics.csv").open() as f:
            scores.append(max(float(r["val/psnr"]) for r in csv.DictReader(f) if r["val/psnr"]))
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        params.append(dict(o.split("=", 1) for o in overrides if o.startswith("model.")))
    assert len(scores) == 2 and params[0] != params[1]
    assert result["best_value"] == pytest.approx(max(scores))
    best = params[scores.index(max(scores))]
    assert {k: str(v) for k, v in result["best_params"].items()} == best
    assert set(best) == {"model.kappa", "model.num_steps", "model.lr", "model.rollout_prob"}


def check_wandb_history(offline: Path, records: list) -> None:
    """Metrics, the validation panel, the test report and the per-item test table."""
    history = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(json.loads(item.value_json))
    assert all(isinstance(v, float) for v in history["val/psnr"]) and history["test/psnr"]
    assert history["val/panel/_type"][0] == "images/separated"
    (panel,) = history["val/panel/filenames"][0]
    assert (offline / "files" / panel).stat().st_size > 1000
    assert history["test/items/_type"][0] == "table-file"
    assert history["test/report/_type"][0] == "images/separated"  # bars and sparsification
    table = json.loads((offline / "files" / history["test/items/path"][0]).read_text())
    assert {"id", "panel", "psnr", "lpips"} <= set(table["columns"]) and table["data"]


def test_ddp_sim_fast_dev_run(cli_env):
    proc = run_cli("vfi.train", "trainer=ddp_sim", "trainer.fast_dev_run=true", *TINY, env=cli_env)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    assert "test/psnr" in proc.stdout


def read_wandb_records(path: Path) -> list:
    """The protobuf records of an offline ``.wandb`` file: a 7-byte header (``:W&B``, magic,
    version), then LevelDB-log chunks (CRC32, 2-byte length, type: 1 full, 2 first,
    3 middle, 4 last) packed in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_killed_run_resumes_at_same_step(cli_env):
    """Through Hydra's submitit launcher (hydra/launcher=local): a job killed mid-training,
    resubmitted with ckpt_path=last, starts at the step of the last.ckpt it left."""
    args = [
        "-m",
        "hydra/launcher=local",
        "trainer.max_steps=400",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "trainer.val_check_interval=1000",
        "test=false",
        *TINY,
    ]
    sweeps = Path(cli_env["VFI_LOG_DIR"]) / "train" / "multiruns"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfi.train", *args],
        cwd=REPO,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the submitit job processes too
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list(sweeps.glob("*/0/checkpoints/last.ckpt")):
            assert proc.poll() is None, "training ended before writing last.ckpt"
            time.sleep(0.5)
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (last,) = sweeps.glob("*/0/checkpoints/last.ckpt")
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step >= 3 and step % 3 == 0
    run_cli("vfi.train", *args, "ckpt_path=last", f"trainer.max_steps={step + 2}", env=cli_env)
    (resubmitted,) = [p for p in sweeps.iterdir() if p != last.parents[2]]
    (log,) = resubmitted.glob(".submitit/*/*_0_log.out")
    out = log.read_text()
    assert f"resuming from {last}" in out and f"training starts at global step {step}" in out


def test_eval_factor_scores_every_inner_frame(task_env, tmp_path):
    """factor=4 on the clips: frames i..i+4, metrics at tau = 0.25 / 0.5 / 0.75, warping
    errors, NFE per frame (0 for blending) and a per-time table."""
    args = ["model=blend", "data=clips", "factor=4", "trainer.limit_test_batches=2"]
    ev = tmp_path / "run"
    run_task("vfi.eval", args, ev)
    record = json.loads((ev / "metrics.json").read_text())["results"][0]
    metrics = record["metrics"]
    assert record["data"] == "clips x4" and metrics["test/nfe_per_frame"] == 0
    for t in ("0.25", "0.5", "0.75"):
        assert 20 < metrics[f"test/psnr_tau{t}"] < 60 and f"test/lpips_tau{t}" in metrics
    mean = sum(metrics[f"test/psnr_tau{t}"] for t in ("0.25", "0.5", "0.75")) / 3
    assert abs(metrics["test/psnr"] - mean) < 1e-4
    # blending ghosts moving content: less consistent over time than the true frames
    assert metrics["test/warp_error"] > metrics["test/warp_error_gt"] > 0
    assert "| 0.75 |" in (ev / "results.md").read_text()


def test_eval_baselines_in_one_table_and_resume(task_env, tmp_path):
    """model=blend with baselines=[ffmpeg]: one table, report.png and per-item rows; a second
    call with resume= continues in that folder and scores only the items not yet there."""
    args = ["model=blend", "baselines=[ffmpeg]", "data=clips", "motion_bins=null"]
    ev = tmp_path / "run"
    run_task("vfi.eval", [*args, "trainer.limit_test_batches=3"], ev)
    results = json.loads((ev / "metrics.json").read_text())["results"]
    assert [r["model"] for r in results] == ["blend", "ffmpeg"]
    assert all(r["metrics"]["test/psnr"] > 20 for r in results)
    table = (ev / "results.md").read_text()
    assert "| blend | clips |" in table and "| ffmpeg | clips |" in table
    assert (ev / "report.png").stat().st_size > 10_000
    logs = sorted((ev / "items").glob("*.jsonl"))
    first = [log.read_text().splitlines() for log in logs]
    assert [len(lines) for lines in first] == [3, 3]
    run_task("vfi.eval", [*args, f"resume={ev}", "trainer.limit_test_batches=2"], tmp_path / "x")
    for log, before in zip(logs, first, strict=True):
        lines = log.read_text().splitlines()
        assert lines[:3] == before  # finished items are kept, not recomputed
        assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3, 4]
    results = json.loads((ev / "metrics.json").read_text())["results"]
    rows = [json.loads(line) for line in logs[0].read_text().splitlines()]
    mean = sum(r["psnr"] for r in rows) / 5
    assert results[0]["metrics"]["test/psnr"] == pytest.approx(mean)


def test_eval_switches_motion_refresh_on_for_a_checkpoint(task_env, tmp_path):
    """motion_refresh=1 on a bridge checkpoint with two-frame flows (tau = 1/2 on the T = 4
    grid: steps 1 -> 3/4 -> 1/2, the motion re-read before the second): one extra flow-net call
    per frame, reported and named in the label. The released weights measure their motion with
    RIFE, which has no two-frame flows to refresh: one line."""
    ckpt = tmp_path / "dis.ckpt"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["model=warp_posterior", "paths.output_dir=/tmp/unused"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    state = instantiate(model_cfg).state_dict()
    config = {"model": model_cfg, "choices": {"model": "warp_posterior"}}
    torch.save({"vfi_config": config, "state_dict": state}, ckpt)
    args = ["data=clips", "trainer.limit_test_batches=1", "num_samples=1", "motion_refresh=1"]
    (record,) = run_task("vfi.eval", [f"ckpt_path={ckpt}", *args], tmp_path / "refresh")
    refreshed = record["metrics"]
    assert record["model"].endswith("refresh=1") and refreshed["test/refresh_nfe_per_frame"] == 1
    assert 25 < refreshed["test/psnr"] < 60
    with pytest.raises(VFIError, match="motion_refresh=1 needs a two-frame flow net"):
        model_from_checkpoint(RELEASE_CHECKPOINT, motion_refresh=1)


def test_warp_posterior_trains_and_serves_factor_4_in_one_pass(cli_env):
    run_cli("vfi.train", "model=warp_posterior", "trainer=debug", *TINY_DATA, env=cli_env)
    (run,) = _runs(cli_env)
    ckpt = next((run / "checkpoints").glob("best-*.ckpt"))
    args = (f"ckpt_path={ckpt}", "data=clips", "factor=4", "trainer.limit_test_batches=1")
    run_cli("vfi.eval", *args, "num_samples=2", env=cli_env)
    (ev,) = _runs(cli_env, "eval")
    metrics = json.loads((ev / "metrics.json").read_text())["results"][0]["metrics"]
    assert metrics["test/nfe_per_frame"] == 1.0  # T = 4: three refiner calls for three frames
    assert {"test/psnr_tau0.25", "test/warp_error"} <= set(metrics)
    # two samples: the calibration of the std against the error. The one item's AUSE is the
    # trapezoid area between its sparsification curve and oracle (numpy, from its row)
    (row,) = [json.loads(line) for line in next((ev / "items").glob("*.jsonl")).open()]
    gap = np.array(row["sparsification"]) - np.array(row["oracle"])
    assert metrics["test/ause"] == pytest.approx(np.trapezoid(gap, np.linspace(0, 0.99, 100)))
    assert row["ause"] > 0 and row["spearman"] == pytest.approx(metrics["test/spearman"])
    assert (ev / "report.png").stat().st_size > 10_000


def test_bench_prints_nfe_and_time_per_frame(task_env, tmp_path, capsys):
    """Three frames per pair: resshift runs 15 steps per frame (refreshing its motion after 5
    and 10 with motion_refresh=5); the bridge one pass of 3 steps for all three (refreshing
    before the last two with motion_refresh=1)."""
    from vfi.bench import main

    out = tmp_path / "bench.md"
    models = ["resshift", "resshift,model.motion_refresh=5", "warp_posterior",
              "warp_posterior,model.motion_refresh=1"]  # fmt: skip
    main(["--size", "64", "--repeats", "1", "--models", *models, "--out", str(out)])
    rows = {
        line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:5]]
        for line in out.read_text().splitlines()[2:]
    }
    want = [[15, 0], [15, 2], [1, 0], [1, 0.67]]  # the table rounds to 2 decimals
    assert [rows[m][:2] for m in models] == want
    assert all(r[2] > 0 for r in rows.values()) and "s / frame" in capsys.readouterr().out


def test_bench_train_prints_steps_per_second(task_env, tmp_path, capsys):
    """vfi.bench train times the steps after the warm-up of any vfi.train config: the table's
    row has the batch, and its rates agree with its time per step and the share outside it."""
    from vfi.bench import main

    out = tmp_path / "train.md"
    main(["train", "model=resshift", *TINY_DATA, "model.lpips_weight=0",
          "--steps", "3", "--warmup", "1", "--out", str(out)])  # fmt: skip
    header, _, row = out.read_text().splitlines()
    cells = dict(zip(header.split("|")[1:-1], row.split("|")[1:-1], strict=True))
    cells = {k.strip(): v.strip() for k, v in cells.items()}
    assert cells["device"] == "cpu" and cells["batch"] == "2"
    steps, samples = float(cells["steps / s"]), float(cells["samples / s"])
    ms, outside = float(cells["ms / step"]), float(cells["outside the step"].rstrip("%")) / 100
    assert samples == pytest.approx(2 * steps, abs=0.1)
    assert 0 <= outside < 1 and steps == pytest.approx((1 - outside) * 1000 / ms, rel=0.05)
    assert "3 training steps after 1" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["warp_posterior_gpu", "resshift_gpu"])
def test_gpu_presets_train_a_step_on_the_cpu(preset, task_env, tmp_path):
    """The GPU presets compose into a model and data that train (here one step on the CPU, at
    their 256 px crops)."""
    from vfi.bench import main

    out = tmp_path / "train.md"
    main(["train", f"experiment={preset}", "trainer=cpu", "data.num_workers=0",
          "data.batch_size=2", "--steps", "1", "--warmup", "0", "--out", str(out)])  # fmt: skip
    assert float(out.read_text().splitlines()[2].split("|")[4]) > 0  # steps / s


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "--steps", "0"], "--steps must be >= 1"),
        (["train", "model=resshfit"], "resshfit"),
        (["--size", "0"], "--size must be at least 8 pixels, got 0"),
        (["--size", "64", "--out", "/proc/no/table.md"], "cannot write --out /proc/no/table.md"),
        (["--samples", "0"], "--samples and --repeats >= 1"),
    ],
)
def test_bench_bad_arguments_are_one_line(capsys, argv, needle):
    from vfi.bench import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and needle in one_line(capsys.readouterr().err)


def test_requeued_job_resumes_its_own_last_checkpoint(task_env, tmp_path, capsys):
    """A SLURM requeue restarts the same job in its own folder: a run whose output folder
    already holds checkpoints/last.ckpt resumes it without ckpt_path (fresh runs get fresh
    folders, so this only happens on a requeue)."""
    job = tmp_path / "multiruns" / "sweep" / "0"
    args = ["trainer=debug", "test=false", "callbacks.last_checkpoint.every_n_train_steps=1"]
    run_task("vfi.train", [*args, *TINY], job)
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    capsys.readouterr()
    run_task("vfi.train", [*args, "trainer.max_steps=3", *TINY], job)
    out = capsys.readouterr().out
    assert f"resuming from {job / 'checkpoints' / 'last.ckpt'}" in out
    assert "training starts at global step 2" in out


class _Payload:
    """What a hostile checkpoint carries: unpickling it runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "module,args",
    [
        ("vfi.train", ["trainer=debug", "data=flying"]),
        ("vfi.eval", ["data=clips"]),
        ("vfi.interpolate", ["input=clip.mp4"]),
        ("vfi.bench", []),
    ],
)
def test_a_checkpoint_never_runs_the_code_it_carries(task_env, tmp_path, capsys, module, args):
    """A checkpoint whose state dict holds a pickled os.system call, given to every entry point
    that opens checkpoints: one line naming the file and the object, exit 2, and the command
    never ran (its marker file stays absent). Unpickled the unsafe way, the same file runs it."""
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "shared.ckpt"
    payload = {"w": torch.zeros(1), "x": _Payload(marker)}
    torch.save({"state_dict": payload, "vfi_config": {"model": {}}}, evil)
    if module == "vfi.bench":
        from vfi.bench import main

        with pytest.raises(SystemExit) as stop:
            main(["--models", str(evil), "--size", "32"])
        assert stop.value.code == 2
        line = one_line(capsys.readouterr().err)
    else:
        line = task_error(module, [*args, f"ckpt_path={evil}"], tmp_path / "run", capsys)
    assert f"refused checkpoint {evil}: it holds posix.system" in line, line
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the unsafe load: the payload runs
    assert marker.exists()


def test_a_diverging_run_stops_in_one_line_and_saves_no_nonfinite_weight(
    task_env, tmp_path, capsys
):
    """model.lr=1e6 on the bridge: the flows become NaN within a few steps. The run stops with
    one line naming the first step whose loss is not finite, before an index is computed from
    a NaN flow (no scatter_add error), and every checkpoint it left (one per step until then)
    holds finite weights only."""
    run = tmp_path / "run"
    args = [
        "model=warp_posterior", *TINY_DATA, "trainer=debug", "trainer.max_steps=40",
        "trainer.log_every_n_steps=5", "trainer.val_check_interval=40", "model.lr=1e6",
        "callbacks.last_checkpoint.every_n_train_steps=1", "test=false",
    ]  # fmt: skip
    line = task_error("vfi.train", args, run, capsys)
    assert "the training loss is not finite at step" in line, line
    step = int(line.split("at step ")[1].split(":")[0])
    assert 1 <= step < 40
    saved = list((run / "checkpoints").glob("*.ckpt"))
    assert saved and not list((run / "checkpoints").glob(".*tmp"))
    for path in saved:
        state = torch.load(path, weights_only=True)
        assert state["global_step"] < step
        assert all(bool(v.isfinite().all()) for v in state["state_dict"].values()), path


def test_an_error_in_training_is_the_only_line_on_stderr(cli_env, tmp_path):
    """A corrupt frame met during fit (data=frames, read in the training loop): stderr holds
    the one error line, with no Lightning banner (devices, tips) or note before it."""
    root = fabricate.frames(tmp_path / "frames", counts=(7,))
    (root / "seq0" / "3.png").write_bytes((root / "seq0" / "3.png").read_bytes()[:60])
    args = ["model=resshift", "data=frames", f"data.root={root}", "data.num_workers=0",
            "data.batch_size=2", "data.train.augment.crop=[32,32]", "trainer=debug",
            "trainer.max_steps=4", "logger=none"]  # fmt: skip
    proc = run_cli("vfi.train", *args, env=cli_env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert (
        one_line(proc.stderr) == f"vfi.train: error: corrupt or truncated image: {root}/seq0/3.png"
    )


def test_eval_on_a_full_disk_names_the_output_and_resumes(cli_env, tmp_path):
    """vfi.eval under a file-size limit of 30 KiB (a disk that fills up): the first panel does
    not fit, so one line names it (an output of the run) and exit 2, with no temporary left;
    the same command with resume= and room to write finishes the table."""
    import resource

    run = tmp_path / "run"
    args = ["model=blend", "data=clips", "data.num_workers=0", f"hydra.run.dir={run}"]
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (30 * 2**10,) * 2)  # noqa: E731
    command = [sys.executable, "-m", "vfi.eval", *args]
    proc = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True,
                          preexec_fn=limit, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith(f"vfi.eval: error: cannot write {run}/panels/") and line.endswith(
        ".png: File too large"
    ), line
    assert not [p for p in run.rglob("*") if "partial" in p.name]
    run_cli("vfi.eval", *args, f"resume={run}", env=cli_env)
    assert json.loads((run / "metrics.json").read_text())["results"][0]["model"] == "blend"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_training_run_exits_128_plus_the_signal_and_resumes(cli_env, tmp_path, stop):
    """Ctrl-C (SIGINT) or SIGTERM once the run has saved last.ckpt: exit 130 / 143 (not
    Lightning's 1), the last checkpoint whole and loadable, and ckpt_path= resumes from it."""
    run = tmp_path / "run"
    args = [*TINY, "logger=none", "test=false", "callbacks.last_checkpoint.every_n_train_steps=2"]
    last = run / "checkpoints" / "last.ckpt"
    code, stderr = stop_midway(
        "vfi.train", *args, "trainer.max_steps=100000", f"hydra.run.dir={run}",
        env=cli_env, ready=last.exists, stop=stop,
    )  # fmt: skip
    assert code == 128 + stop, stderr
    assert "Traceback" not in stderr
    step = torch.load(last, weights_only=True)["global_step"]
    assert step >= 2 and not list(last.parent.glob(".*tmp"))
    resumed = run_cli("vfi.train", *args, f"ckpt_path={last}", f"trainer.max_steps={step + 2}",
                      f"hydra.run.dir={tmp_path / 'resumed'}", env=cli_env)  # fmt: skip
    assert f"training starts at global step {step}" in resumed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_eval_exits_128_plus_the_signal_and_resumes(cli_env, tmp_path, stop):
    """Ctrl-C or SIGTERM while vfi.eval scores: exit 130 / 143 with no traceback and every row
    written so far whole (one JSON object per line); kill -9 may cut the last row short.
    Either way resume= scores the items after the whole rows, each item once, and leaves
    every line whole."""
    ev = tmp_path / "run"
    args = ["model=ffmpeg", "data=clips_native", "motion_bins=null"]

    def rows() -> list[str]:
        logs = list((ev / "items").glob("*.jsonl")) if (ev / "items").is_dir() else []
        return logs[0].read_text().splitlines() if logs else []

    def whole_rows() -> list[dict]:
        return [json.loads(line) for line in rows() if is_json(line)]

    code, stderr = stop_midway(
        "vfi.eval", *args, f"hydra.run.dir={ev}", env=cli_env, ready=whole_rows, stop=stop
    )
    assert code == (-stop if stop == signal.SIGKILL else 128 + stop), stderr
    assert "Traceback" not in stderr and not (ev / "metrics.json").exists()
    lines = rows()
    if stop == signal.SIGKILL:  # the row being written when the process died is cut short
        if is_json(lines[-1]):
            log = next((ev / "items").glob("*.jsonl"))
            log.write_text(log.read_text() + '{"index": 99, "psn')
        else:
            lines = lines[:-1]
    done = [json.loads(line)["index"] for line in lines]
    assert done == list(range(len(done))) and 0 < len(done) < 24
    more = len(done) + 2  # resume= scores two of the items not yet scored
    run_cli("vfi.eval", *args, f"resume={ev}", "trainer.limit_test_batches=2",
            f"hydra.run.dir={tmp_path / 'x'}", env=cli_env)  # fmt: skip
    assert [json.loads(line)["index"] for line in rows()] == list(range(more))
    assert json.loads((ev / "metrics.json").read_text())["results"][0]["items"] == more


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_exits_128_plus_it_when_the_unwinding_meets_another_error(stop, capsys):
    """A signal that lands between two lines of a library whose ``finally`` then fails (as
    Hydra's config reader did in CI: an unbound file handle) still exits 128 + the signal,
    and the handlers before the block are back after it."""
    from vfi.utils.run import exit_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with exit_on_signals("prog"):
            try:
                os.kill(os.getpid(), stop)
                time.sleep(5)  # the handler raises here
            finally:
                raise UnboundLocalError("cannot access local variable 'f'")
    assert stopped.value.code == 128 + stop
    assert isinstance(stopped.value.__context__, UnboundLocalError)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_bench_exits_128_plus_the_signal_and_writes_nothing(cli_env, tmp_path, stop):
    """Ctrl-C or SIGTERM once vfi.bench has started: exit 130 / 143 with no traceback, and no
    table (nor a temporary) under --out."""
    out = tmp_path / "bench" / "table.md"
    code, stderr = stop_midway(
        "vfi.bench", "--models", "warp_posterior", "--size", "64", "--repeats", "100000",
        "--out", str(out), env=cli_env, ready=lambda: True, stop=stop,
    )  # fmt: skip
    assert code == 128 + stop, stderr
    assert "Traceback" not in stderr, stderr
    assert not out.parent.exists() or not list(out.parent.iterdir())


def is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True
