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
    assert torch.load(path, weights_only=False)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


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


def test_foreign_file_is_not_a_vfi_checkpoint(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(VFIError, match="not a vfi training checkpoint"):
        load_checkpoint(bad)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(VFIError, match="cannot read checkpoint"):
        load_checkpoint(junk)
