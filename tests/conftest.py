import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Under pytest-xdist every worker already has its core: one torch thread each, also in the
# entry-point subprocesses (OMP_NUM_THREADS), instead of oversubscribing the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
SHARED = REPO.parent / "shared"
ALEXNET = SHARED / "weights" / "alexnet_features_imagenet.pth"
# The lab's offline copy of LPIPS's AlexNet features; without ../shared (e.g. on a GitHub
# runner) torchvision downloads the usual weights.
LPIPS_BACKBONE = str(ALEXNET) if ALEXNET.is_file() else None
needs_shared = pytest.mark.skipif(
    LPIPS_BACKBONE is None or not (SHARED / "lpips_ref").is_dir(),
    reason="../shared (LPIPS reference weights and image pair) is absent",
)


@pytest.fixture
def cli_env(tmp_path):
    """Environment for entry-point subprocesses: logs under tmp_path, local LPIPS weights."""
    env = dict(os.environ)
    env["VFI_LOG_DIR"] = str(tmp_path / "logs")
    env.pop("VFI_LPIPS_BACKBONE", None)
    if LPIPS_BACKBONE:
        env["VFI_LPIPS_BACKBONE"] = LPIPS_BACKBONE
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("WANDB_API_KEY", None)
    return env


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for signal ``signum`` (Linux: the
    SigCgt mask of /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (signum - 1) & 1)


def stop_midway(module: str, *args: str, env: dict, ready, stop: int) -> tuple[int, str]:
    """Start ``python -m module args``, send it ``stop`` (a signal) once ``ready()`` is true
    and the process has its signal handlers in place (SIGTERM's, set with SIGINT's; Python
    catches SIGINT from the start), and return its exit status and stderr. Its SIGINT starts
    at the default, as from a terminal (pytest-xdist's workers ignore it, and a child would
    inherit that)."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 300
    try:
        while (
            not (ready() and catches(proc.pid, signal.SIGTERM))
            and proc.poll() is None
            and time.time() < deadline
        ):
            time.sleep(0.02)
        proc.send_signal(stop)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, stderr


def run_cli(module: str, *args: str, env: dict, timeout: int = 600, check: bool = True):
    """Run ``python -m module args`` in the repo root and return the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


# python -m <module> runs <function> of that module on the <config> config
TASKS = {
    "vfi.train": ("train", "train"),
    "vfi.eval": ("eval", "evaluate"),
    "vfi.calibrate": ("calibrate", "calibrate"),
    "vfi.interpolate": ("interpolate", "interpolate"),
    "vfi.data.bench": ("data_bench", "bench"),
    "vfi.data.convert": ("convert", "convert"),
}


@pytest.fixture
def task_env(cli_env, monkeypatch):
    """cli_env applied to this process, for entry-point tasks run in-process."""
    for key in ("VFI_LOG_DIR", "VFI_LPIPS_BACKBONE"):
        if key in cli_env:
            monkeypatch.setenv(key, cli_env[key])
        else:
            monkeypatch.delenv(key, raising=False)
    return cli_env


def compose_task(config_name: str, overrides: list[str], output_dir: Path):
    """The config ``python -m vfi.<task> overrides`` would run with, for calling the task
    in-process: the Hydra runtime (choices) is set and the run writes into output_dir."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from vfi.utils.run import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[*overrides, f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_task(module: str, overrides: list[str], output_dir: Path):
    """``python -m module overrides`` in-process (the same choice check, config and task)."""
    from vfi.utils.run import check_command_line

    config_name, function = TASKS[module]
    check_command_line(list(overrides), config_name, module)
    cfg = compose_task(config_name, overrides, output_dir)
    # console log handlers made during an earlier test (Lightning's) keep that test's stderr
    # capture, since closed: point them at this test's, as a fresh process would have
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler and getattr(handler.stream, "closed", 0):
                handler.stream = sys.stderr  # setStream would flush the closed one
    return getattr(importlib.import_module(module), function)(cfg)


def task_error(module: str, overrides: list[str], output_dir: Path, capsys) -> str:
    """Run the task in-process expecting a refusal: exit 2 and one line on stderr (returned)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_task(module, overrides, output_dir)
    assert stop.value.code == 2
    return one_line(capsys.readouterr().err)


def one_line(stderr: str) -> str:
    """The only non-blank line of stderr (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def tested_frames(monkeypatch):
    """What every test step of a run in this process returns (the models' shared
    ``test_step``: the batch and its (mean, std) outputs per time), in order: for recomputing
    the reported test scores from the frames with :func:`psnr_of`."""
    from vfi.models.base import InterpolatorModule

    seen: list[dict] = []
    step = InterpolatorModule.test_step

    def recording(self, batch, batch_idx):
        out = step(self, batch, batch_idx)
        if out is not None:
            seen.append({"outs": out["outs"], "gt": out["batch"]["gt"]})
        return out

    monkeypatch.setattr(InterpolatorModule, "test_step", recording)
    return seen


def psnr_of(outputs: list[dict]) -> float:
    """test/psnr recomputed from the test steps' frames (:func:`tested_frames`), independently of
    vfi.metrics: per item and time 10 log10(255^2 / MSE) of the frames rounded to 8 bits, in
    float64, averaged over the item's times, then over the items."""
    items = []
    for out in outputs:
        per_time = []
        for j, (mean, _) in enumerate(out["outs"]):
            pred, truth = (
                ((x.detach().cpu().double().clamp(-1, 1) + 1) * 127.5).round()
                for x in (mean, out["gt"][:, j])
            )
            mse = (pred - truth).pow(2).flatten(1).mean(1)
            per_time.append(10 * torch.log10(255.0**2 / mse))
        items += torch.stack(per_time).mean(0).tolist()
    assert items, "no test step ran"
    return sum(items) / len(items)
