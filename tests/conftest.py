import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ALEXNET = SHARED / "weights" / "alexnet_features_imagenet.pth"


@pytest.fixture
def cli_env(tmp_path):
    """Environment for entry-point subprocesses: logs under tmp_path, local LPIPS weights."""
    env = dict(os.environ)
    env["VFI_LOG_DIR"] = str(tmp_path / "logs")
    env["VFI_LPIPS_BACKBONE"] = str(ALEXNET)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("WANDB_API_KEY", None)
    return env


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
