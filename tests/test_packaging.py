"""The package as users install it: a wheel that carries its configs and weights, and an
entry point that runs from an installed (non-editable) copy."""

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


@pytest.mark.slow
def test_wheel_ships_the_configs_and_runs_installed(cli_env, tmp_path):
    source = tmp_path / "source"  # built from a copy: the build writes build/ and egg-info
    skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "logs", "tests")
    shutil.copytree(REPO, source, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist")],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("vfi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"vfi/conf/train.yaml", "vfi/conf/model/warp_posterior.yaml",
                "vfi/conf/data/source/clips_heldout.yaml", "vfi/weights/release.ckpt",
                "vfi/weights/release.safetensors"}  # fmt: skip
    assert expected <= names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", str(wheel), "--no-deps", "--no-index",
         "--disable-pip-version-check", "-q", "--target", str(site)],
        check=True, capture_output=True,
    )  # fmt: skip
    # this environment imports the checkout through an editable-install finder: drop it, so
    # that `vfi` comes from the installed copy alone
    code = (
        "import runpy, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path"
        " if not type(f).__module__.startswith('__editable__')]\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import vfi\n"
        f"assert vfi.__file__.startswith({str(site)!r}), vfi.__file__\n"
        "sys.argv = ['vfi.eval', 'model=blend', 'data=clips', 'trainer.limit_test_batches=1']\n"
        "runpy.run_module('vfi.eval', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| blend | clips |" in proc.stdout
