"""Atomic checkpoint writes and checkpoint-path resolution."""

from __future__ import annotations

import glob
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vfi.errors import VFIError


def load_checkpoint(path: str | Path) -> dict:
    """A vfi training checkpoint (state dict plus the saved ``vfi_config``), read on the CPU
    with ``weights_only=True``: tensors and plain containers only, so opening a file never runs
    code in it; a file that holds any other object is refused. A ``.safetensors`` export
    (:func:`export_checkpoint`) reads as the same dict."""
    if not Path(path).is_file():
        raise VFIError(f"checkpoint not found: {path}")
    try:
        if Path(path).suffix == ".safetensors":
            return read_safetensors(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except VFIError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one line
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and found:
            raise VFIError(
                f"refused checkpoint {path}: it holds {found[1]}, not only tensors and plain "
                "containers (vfi opens checkpoints with weights_only=True, which runs no code)"
            ) from None
        raise VFIError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "vfi_config" not in ckpt or "state_dict" not in ckpt:
        raise VFIError(f"{path} is not a vfi training checkpoint (no saved vfi_config)")
    return ckpt


def read_safetensors(path: str | Path) -> dict:
    """The dict of a ``.safetensors`` export: its tensors as ``state_dict``, and ``vfi_config``,
    ``metrics``, ``global_step`` from the JSON in its metadata."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if "vfi_config" not in meta:
        raise VFIError(f"{path} is not a vfi export (no vfi_config in its metadata)")
    ckpt = {name: json.loads(meta[name]) for name in ("vfi_config", "metrics", "global_step")}
    return dict(ckpt, state_dict=load_file(str(path), device="cpu"))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it (``.<name>.<pid>.tmp``), then
    renames it into place, so a run killed mid-write never leaves a truncated checkpoint; the
    temporary files of writers that died (killed runs) are removed at the next write."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            pid = stale.name[len(path.name) + 2 : -len(".tmp")]
            if pid.isdigit() and not _process_alive(int(pid)):
                stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # torch reports a short write as a RuntimeError
            reason = getattr(exc, "strerror", None) or "the write stopped short"
            raise VFIError(
                f"cannot write checkpoint {path}: {reason} (is the disk full?); the previous "
                "one is kept"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)


RELEASE_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "release.ckpt"


def export_checkpoint(
    source: str | Path,
    out: str | Path,
    metrics: dict[str, float],
    config: dict | None = None,
    extra_info: dict | None = None,
    checkpoint: dict | None = None,
) -> Path:
    """A weights-only copy of a training checkpoint for release: its ``state_dict``,
    ``vfi_config`` (or ``config``: the run's, e.g. a re-test of the checkpoint with other
    sampler settings) and ``metrics`` (no optimizer state), written atomically as ``out``
    (a ``.ckpt``, what the entry points read by default: one format with the training
    checkpoints), as the same name in ``.safetensors`` (the model hubs' format: the config and
    metrics as JSON in its metadata), and the metrics in a JSON file beside them
    (``release.json`` for ``release.ckpt``; ``extra_info`` adds to it or replaces its fields).
    ``checkpoint``: the one at ``source``, already read (and changed: e.g. a refitted
    calibration scale), so it is not read again."""
    import json

    from safetensors.torch import save_file

    from vfi.utils.run import write_atomic

    ckpt = checkpoint if checkpoint is not None else load_checkpoint(source)
    out = Path(out)
    config = dict(config or ckpt["vfi_config"])
    # the LPIPS weights' path is the training machine's: the loader takes its own
    if "lpips_backbone" in config["model"]:
        config["model"] = dict(config["model"], lpips_backbone=None)
    slim = {
        "state_dict": {k: v.contiguous().clone() for k, v in ckpt["state_dict"].items()},
        "vfi_config": config,
        "metrics": metrics,
        "global_step": ckpt.get("global_step"),
    }
    AtomicCheckpointIO().save_checkpoint(slim, out)
    meta = {name: json.dumps(slim[name]) for name in ("vfi_config", "metrics", "global_step")}
    write_atomic(
        out.with_suffix(".safetensors"),
        lambda tmp: save_file(slim["state_dict"], str(tmp), metadata=meta),
    )
    # the run folder and file, not the machine's path
    info = {"metrics": metrics, "global_step": slim["global_step"]}
    info["source"] = "/".join(Path(source).resolve().parts[-3:])
    info["choices"] = slim["vfi_config"].get("choices", {})
    info.update(extra_info or {})
    write_atomic(out.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return out


def checkpoint_or_release(ckpt_path: str | None, model_given: bool, runs_dir: str | Path):
    """The checkpoint an entry point scores or runs: ``ckpt_path`` resolved, else the released
    weights unless a baseline ``model=`` was given (then None). Both is an error: the
    checkpoint fixes its model."""
    if ckpt_path is not None and model_given:
        raise VFIError(
            f"give ckpt_path= or model=, not both: {ckpt_path} fixes its own model "
            "(use baselines=[...] to score baselines beside it)"
        )
    if ckpt_path is None and not model_given:
        ckpt_path = "release"
    return resolve_checkpoint(ckpt_path, runs_dir)


def newest_match(pattern: str, missing: str) -> str:
    """The most recently modified file matching the glob ``pattern`` (``**`` spans folders),
    else a VFIError with the message ``missing``."""
    found = sorted(glob.glob(pattern, recursive=True), key=os.path.getmtime)
    if not found:
        raise VFIError(missing)
    return found[-1]


def resolve_checkpoint(ckpt_path: str | None, runs_dir: str | Path) -> str | None:
    """``None`` stays None; ``"last"`` / ``"best"`` is the newest ``last.ckpt`` /
    ``best-*.ckpt`` under ``runs_dir``; ``"release"`` the released weights that ship with the
    package (``vfi/weights``); a glob pattern (the shell leaves ``key=...*...`` words alone)
    its newest match; any other value must be an existing file."""
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "release":
        if not RELEASE_CHECKPOINT.is_file():
            raise VFIError(
                f"no released weights at {RELEASE_CHECKPOINT}: give ckpt_path=<checkpoint> "
                "(python -m vfi.train experiment=release writes one)"
            )
        return str(RELEASE_CHECKPOINT)
    names = {"last": "last.ckpt", "best": "best-*.ckpt"}
    if str(ckpt_path) in names:
        name = names[str(ckpt_path)]
        pattern = str(Path(runs_dir) / "**" / "checkpoints" / name)
        return newest_match(pattern, f"ckpt_path={ckpt_path}: no {name} under {runs_dir}")
    if any(char in str(ckpt_path) for char in "*?["):
        return newest_match(str(ckpt_path), f"checkpoint not found: nothing matches {ckpt_path}")
    if not Path(ckpt_path).is_file():
        raise VFIError(f"checkpoint not found: {ckpt_path}")
    return str(ckpt_path)
