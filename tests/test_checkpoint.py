"""Checkpoint writing and lookup."""

import os
import time

import pytest
import torch

from vfi.errors import VFIError
from vfi.utils.checkpoint import AtomicCheckpointIO, load_checkpoint, resolve_checkpoint


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 3}, path)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 6}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    """A checkpoint write under a file-size limit of 256 KiB (a disk that fills up): one line
    naming the checkpoint, no temporary left, and the previous last.ckpt intact and loadable.
    Without the limit the same write succeeds."""
    import subprocess
    import sys

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.ones(10)}, path)
    script = (
        "import resource, sys, torch\n"
        "from vfi.errors import VFIError\n"
        "from vfi.utils.checkpoint import AtomicCheckpointIO\n"
        "limit = int(sys.argv[2])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
        "try:\n"
        "    AtomicCheckpointIO().save_checkpoint({'global_step': 6, 'w': torch.ones(2**18)},"
        " sys.argv[1])\n"
        "except VFIError as exc:\n"
        "    sys.exit(str(exc))\n"
    )
    run = [sys.executable, "-c", script, str(path)]
    proc = subprocess.run([*run, str(2**18)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"cannot write checkpoint {path}: the write stopped short (is the disk full?); the "
        "previous one is kept"
    ), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["global_step"] == 3
    subprocess.run([*run, str(2**22)], check=True)
    assert torch.load(path, weights_only=True)["global_step"] == 6


def test_next_write_removes_temporaries_of_dead_writers(tmp_path):
    """A run killed mid-write leaves .last.ckpt.<pid>.tmp: the next write removes it, but not
    the temporary of a writer still alive."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".last.ckpt.{dead}.tmp"
    alive = tmp_path / f".last.ckpt.{os.getppid()}.tmp"
    other = tmp_path / f".best.ckpt.{dead}.tmp"
    for path in (stale, alive, other):
        path.write_bytes(b"partial")
    AtomicCheckpointIO().save_checkpoint({"step": 3}, tmp_path / "last.ckpt")
    assert torch.load(tmp_path / "last.ckpt")["step"] == 3
    assert not stale.exists() and alive.exists() and other.exists()


def test_resolve_last_picks_the_newest_run(tmp_path):
    for i, run in enumerate(["a", "b"]):
        ckpt = tmp_path / "runs" / run / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (time.time() + i, time.time() + i))
    assert resolve_checkpoint("last", tmp_path).endswith("b/checkpoints/last.ckpt")
    assert resolve_checkpoint(None, tmp_path) is None
    with pytest.raises(VFIError, match="no last.ckpt under"):
        resolve_checkpoint("last", tmp_path / "empty")
    with pytest.raises(VFIError, match="checkpoint not found"):
        resolve_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)


def test_resolve_best_and_globs_pick_the_newest_match(tmp_path):
    """``best`` and a glob such as the README's ``<run>/checkpoints/best-*.ckpt`` (which the
    shell passes through unexpanded inside ``ckpt_path=...``) take the newest match."""
    paths = []
    for i, (run, name) in enumerate([("b", "best-step000600.ckpt"), ("a", "best-step000100.ckpt")]):
        ckpt = tmp_path / "runs" / run / "checkpoints" / name
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (time.time() + i, time.time() + i))
        paths.append(str(ckpt))
    assert resolve_checkpoint("best", tmp_path) == paths[1]
    assert (
        resolve_checkpoint(str(tmp_path / "runs/*/checkpoints/best-*.ckpt"), tmp_path) == paths[1]
    )
    assert (
        resolve_checkpoint(str(tmp_path / "runs/b/checkpoints/best-*.ckpt"), tmp_path) == paths[0]
    )
    with pytest.raises(VFIError, match="nothing matches"):
        resolve_checkpoint(str(tmp_path / "runs/*/checkpoints/last-*.ckpt"), tmp_path)
    with pytest.raises(VFIError, match="no best-"):
        resolve_checkpoint("best", tmp_path / "empty")


def test_foreign_file_is_not_a_vfi_checkpoint(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(VFIError, match="not a vfi training checkpoint"):
        load_checkpoint(bad)
    from safetensors.torch import save_file

    bare = tmp_path / "model.safetensors"
    save_file({"weights": torch.zeros(1)}, str(bare))
    with pytest.raises(VFIError, match="not a vfi export"):
        load_checkpoint(bare)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(VFIError, match="cannot read checkpoint"):
        load_checkpoint(junk)


def test_export_keeps_weights_config_and_metrics_only(tmp_path):
    """The release format: state dict, config and metrics, no optimizer state; a JSON beside."""
    import json

    from vfi.utils.checkpoint import export_checkpoint

    source = tmp_path / "best.ckpt"
    weights = {"layer.weight": torch.arange(6.0).view(2, 3)}
    full = {
        "state_dict": weights,
        "vfi_config": {"model": {"_target_": "x"}, "choices": {"experiment": "release"}},
        "optimizer_states": [{"state": {0: torch.zeros(1000)}}],
        "global_step": 600,
    }
    torch.save(full, source)
    out = export_checkpoint(source, tmp_path / "release.ckpt", {"test/psnr": 33.3})
    slim = load_checkpoint(out)
    assert set(slim) == {"state_dict", "vfi_config", "metrics", "global_step"}
    assert torch.equal(slim["state_dict"]["layer.weight"], weights["layer.weight"])
    assert slim["vfi_config"] == full["vfi_config"] and slim["global_step"] == 600
    info = json.loads((tmp_path / "release.json").read_text())
    assert info["metrics"] == {"test/psnr": 33.3} and info["choices"] == {"experiment": "release"}
    # the hub format holds the same tensors, config and metrics
    hub = load_checkpoint(tmp_path / "release.safetensors")
    assert set(hub) == set(slim) and hub["state_dict"].keys() == weights.keys()
    assert torch.equal(hub["state_dict"]["layer.weight"], weights["layer.weight"])
    assert {k: hub[k] for k in ("vfi_config", "metrics", "global_step")} == {
        "vfi_config": full["vfi_config"],
        "metrics": {"test/psnr": 33.3},
        "global_step": 600,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.ckpt",
        "release.ckpt",
        "release.json",
        "release.safetensors",
    ]


def test_exports_get_the_permissions_of_a_plain_file(tmp_path):
    """safetensors writes its files 0600; the export (like every output) gets what a plain
    file gets under the umask, so a colleague on a shared machine can read it."""
    from vfi.utils.checkpoint import export_checkpoint
    from vfi.utils.run import current_umask

    source = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "vfi_config": {"model": {}}}, source)
    out = export_checkpoint(source, tmp_path / "out" / "release.ckpt", {"test/psnr": 30.0})
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    want = 0o666 & ~current_umask()
    assert (plain.stat().st_mode & 0o777) == want
    for path in (out, out.with_suffix(".safetensors"), out.with_suffix(".json")):
        assert (path.stat().st_mode & 0o777) == want, (path.name, oct(path.stat().st_mode))


def test_release_is_the_packaged_file(monkeypatch, tmp_path):
    """ckpt_path=release names vfi/weights/release.ckpt; without it, one line asks for one."""
    import vfi.utils.checkpoint as checkpoint

    missing = tmp_path / "weights" / "release.ckpt"
    monkeypatch.setattr(checkpoint, "RELEASE_CHECKPOINT", missing)
    with pytest.raises(VFIError, match="no released weights .* give ckpt_path="):
        resolve_checkpoint("release", tmp_path)
    missing.parent.mkdir()
    missing.write_bytes(b"x")
    assert resolve_checkpoint("release", tmp_path) == str(missing)


def test_optimized_value_is_the_best_checkpoint_score_else_the_last_or_one_line():
    """What vfi.train returns to a sweeper: the best score of the checkpoint callback that
    monitors the metric, else the metric's last logged value, else a VFIError naming the
    metrics that were logged."""
    from types import SimpleNamespace

    from vfi.train import optimized_value

    best = SimpleNamespace(monitor="val/psnr", best_model_score=torch.tensor(31.5))
    last = SimpleNamespace(monitor=None, best_model_score=None)
    metrics = {"val/psnr": torch.tensor(30.0), "val/ssim": torch.tensor(0.9)}
    trainer = SimpleNamespace(checkpoint_callbacks=[last, best], callback_metrics=metrics)
    assert optimized_value(trainer, "val/psnr") == 31.5
    assert optimized_value(trainer, "val/ssim") == pytest.approx(0.9)
    with pytest.raises(VFIError, match=r"val/nope was never logged \(logged: val/psnr, val/ssim\)"):
        optimized_value(trainer, "val/nope")


def test_the_release_files_hold_no_machine_path(tmp_path):
    """release.ckpt, .safetensors and .json name no absolute path of the machine that trained
    them; an export drops the LPIPS weights' path, which each loader gives itself."""
    import json
    import re

    from vfi.utils.checkpoint import RELEASE_CHECKPOINT, export_checkpoint

    texts = [RELEASE_CHECKPOINT.with_suffix(".json").read_text()]
    for suffix in (".ckpt", ".safetensors"):
        saved = load_checkpoint(RELEASE_CHECKPOINT.with_suffix(suffix))
        texts.append(json.dumps(saved["vfi_config"]))
    for text in texts:
        assert not re.search(r'"/(work|root|home|tmp|Users)\b', text), text[:300]
    source = tmp_path / "run" / "checkpoints" / "best.ckpt"
    source.parent.mkdir(parents=True)
    config = {"model": {"lpips_backbone": "/home/me/alexnet.pth", "kappa": 0.01}, "data": {}}
    torch.save({"state_dict": {"w": torch.ones(2)}, "vfi_config": config}, source)
    out = export_checkpoint(source, tmp_path / "out.ckpt", {"test/psnr": 30.0})
    assert load_checkpoint(out)["vfi_config"]["model"] == {"lpips_backbone": None, "kappa": 0.01}
