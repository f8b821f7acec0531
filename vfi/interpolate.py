"""python -m vfi.interpolate: slow motion from a video, or in-between frames of a pair.

Video mode: ``input=clip.mp4 factor=N output=out.mp4`` writes N times the frame rate, every
input frame kept and N - 1 frames between each pair (so N (n - 1) + 1 frames). Pair mode:
``frames=[a.png,b.png] times=[0.25,0.5,0.75]`` writes one PNG per time. ``uncertainty=true``
also writes the per-pixel standard deviation (over ``num_samples`` samples, at least 2, or the
bridge's from one pass) as a heat-map video or PNGs. A checkpoint (``ckpt_path=``; by default
the released weights in ``vfi/weights``) or a baseline (``model=blend|classical|ffmpeg|rife``)
does the work, tile by tile (``tile``, ``tile_overlap``) on frames larger than a tile. Every
output is written under a temporary name and moved into place once complete.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.progress import track

from vfi.data.items import read_image, to_model_range, to_uint8
from vfi.data.video import open_video, replace_outer_across_cuts, rgb
from vfi.errors import VFIError
from vfi.models.checkpoint import model_from_checkpoint
from vfi.ops.scene import nearest_frame
from vfi.ops.tiles import tiled
from vfi.utils.checkpoint import checkpoint_or_release, load_checkpoint
from vfi.utils.panels import heatmap, save_png
from vfi.utils.run import entry_point, partial_name, run_hydra

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_device(name: str) -> torch.device:
    """``name`` as a torch device that this machine has."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise VFIError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}") from None
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise VFIError(
            f"device {name} is not available (CUDA devices: {torch.cuda.device_count()})"
        )
    if device.type not in ("cpu", "cuda"):
        raise VFIError(f"device must be auto, cpu, cuda or cuda:<index>, got {name!r}")
    return device


def check_times(times) -> list[float]:
    if isinstance(times, str):
        times = [times]
    try:
        values = [float(t) for t in times]
    except (TypeError, ValueError):
        raise VFIError(f"times must be numbers in (0, 1), got {list(times)}") from None
    bad = [t for t in values if not 0 < t < 1]
    if not values or bad:
        raise VFIError(f"times must lie in (0, 1), got {bad[0] if bad else 'none'}")
    return values


def check_output(path: Path, source: Path | None = None) -> Path:
    """``path`` after checking its folder exists and is writable and that it is not the
    ``source`` file (symbolic links followed)."""
    if source is not None and path.resolve() == source.resolve():
        raise VFIError(f"output {path} is the input video {source}: give another output=")
    folder = path.parent
    if not folder.is_dir():
        raise VFIError(f"cannot write output {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise VFIError(f"cannot write output {path}: folder {folder} is not writable")
    return path


class Interpolator:
    """A model run on one device and precision, tile by tile, returning uint8 frames.

    ``frames_between(i0, i1, times, outer, consecutive)``: i0, i1 uint8 [3, H, W] (and their
    outer neighbours I_-1, I2, for models that read them; I0 or I1 stands in for one that a
    scene cut separates from them; ``consecutive``: the frames are one video frame apart, which
    the scene-cut test uses) -> per time (mean uint8 [3, H, W], std [H, W, 3] heat map uint8
    or None)."""

    def __init__(self, model, num_samples: int, uncertainty: bool, tile, overlap: int, device,
                 precision: str):  # fmt: skip
        if precision not in PRECISIONS:
            raise VFIError(f"precision must be one of fp32, bf16, fp16, got {precision!r}")
        if tile is not None and (not isinstance(tile, int) or tile < 64):
            raise VFIError(f"tile must be an integer >= 64 or null, got {tile!r}")
        if tile is not None and (not isinstance(overlap, int) or not 0 <= overlap <= tile // 4):
            raise VFIError(f"tile_overlap must be an integer from 0 to tile / 4, got {overlap!r}")
        self.device = check_device(device)
        self.model = model.to(self.device).eval()
        self.dtype = PRECISIONS[precision] if self.device.type == "cuda" else None
        self.num_samples, self.uncertainty = num_samples, uncertainty
        self.tile, self.overlap = tile, overlap
        self.vmax: float | None = None  # one heat-map scale for a whole video

    @torch.no_grad()
    def frames_between(self, i0, i1, times: list[float], outer=None, consecutive: bool = False):
        use_outer = outer is not None and self.model.takes_outer
        if use_outer:
            window = torch.stack([outer[0], i0, i1, outer[1]])
            outer = replace_outer_across_cuts(window, consecutive)[[0, 3]]
        images = [
            to_model_range(x)[None].to(self.device) for x in (i0, i1, *(outer if use_outer else ()))
        ]

        def run(crops):
            extra = {"outer": torch.stack(crops[2:], dim=1)} if use_outer else {}
            if not self.uncertainty and getattr(self.model, "one_pass_std", False):
                extra["with_std"] = False  # the bridge's std would be discarded: not computed
            with torch.autocast("cuda", self.dtype, enabled=self.dtype is not None):
                outs = self.model.interpolate_times(
                    crops[0], crops[1], times, self.num_samples, **extra
                )
            return [t.float() for pair in outs for t in pair]

        if bool(self.model.cut_mask(*images[:2], consecutive).all()):  # the nearer frame
            flat = [x for t in times for x in nearest_frame(*images[:2], t)]
        else:
            flat = tiled(run, images, self.tile, self.overlap)
        results = []
        for mean, std in zip(flat[0::2], flat[1::2], strict=True):
            heat = None
            if self.uncertainty:
                self.vmax = self.vmax or float(std.mean(1).max().clamp_min(1e-3))
                heat = heatmap(std.cpu(), self.vmax)[0]
                heat = (heat.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            results.append((to_uint8(mean[0]).cpu(), heat))
        return results


class VideoWriter:
    """H.264 at a constant quality (``crf``; 0 is lossless) into ``path``'s temporary name;
    ``close`` moves it into place. yuv420p for even sizes, yuv444p otherwise."""

    def __init__(self, path: Path, rate: Fraction, width: int, height: int, crf: int):
        self.path, self.tmp = path, partial_name(path)
        try:
            self.container = av.open(str(self.tmp), "w")
        except (ValueError, av.error.FFmpegError):
            raise VFIError(
                f"cannot write {path}: no video container for {path.suffix!r} (use .mp4 or .mkv)"
            ) from None
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.stream.options = {"crf": str(crf)}
        self.count, self.time_base = 0, 1 / rate

    def write(self, image: np.ndarray | av.VideoFrame) -> None:
        if isinstance(image, av.VideoFrame):
            frame = image
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = self.count, self.time_base
        self.count += 1
        self.mux(frame)

    def mux(self, frame: av.VideoFrame | None, close: bool = False) -> None:
        """Encode ``frame`` (None: flush) and mux its packets (then close the file); a failed
        write (a full disk, a file-size limit) is one line naming the output."""
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            if close:
                self.container.close()
        except (av.error.FFmpegError, OSError) as exc:
            raise VFIError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.mux(None, close=True)
        self.release()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.container is not None:  # None: closed (and moved into place) already
            with contextlib.suppress(av.error.FFmpegError, OSError):  # the write may have failed
                self.container.close()
            self.release()
        self.tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Free the encoder and its threads now, not when the writer goes: a writer that an
        exception's traceback keeps may be collected in a forked DataLoader worker, where
        freeing a thread pool without its threads waits forever (see ``open_video``)."""
        self.container = self.stream = None


def interpolate_video(cfg: DictConfig, engine: Interpolator, out_dir: Path) -> list[Path]:
    factor = cfg.factor
    if not isinstance(factor, int) or factor < 2:
        raise VFIError(f"factor must be an integer of at least 2, got {factor!r}")
    source = Path(cfg.input)
    with open_video(source) as container:
        stream = container.streams.video[0]
        output = Path(cfg.output) if cfg.output else out_dir / f"{source.stem}_x{factor}.mp4"
        outputs = [output]
        if cfg.uncertainty:
            outputs.append(output.with_name(f"{output.stem}_std{output.suffix}"))
        outputs = [check_output(path, source) for path in outputs]
        frames = track(
            container.decode(stream),
            total=stream.frames or None,
            description=f"x{factor} {source.name}",
        )
        rate = Fraction(stream.average_rate or 25) * factor
        write_slow_motion(frames, engine, factor, outputs, rate, cfg.crf, source)
    return outputs


def write_slow_motion(frames, engine, factor: int, outputs: list[Path], rate, crf, source):
    """Write every decoded frame with the factor - 1 interpolations before it into
    ``outputs`` (the video, and the std heat maps when there are two). The pair (k, k + 1) is
    interpolated once frame k + 2 has arrived: frames k - 1 and k + 2 are its outer
    neighbours (k and k + 1 again at the clip's ends)."""
    times = [j / factor for j in range(1, factor)]
    writers: list[VideoWriter] = []

    def write_input(decoded, frame) -> None:
        writers[0].write(decoded)  # the input frame as decoded: no RGB round trip
        if len(writers) > 1:
            writers[1].write(np.zeros((*frame.shape[-2:], 3), np.uint8))

    def write_between(recent: list, after) -> None:
        """The frames between the last two of ``recent`` ((decoded, rgb) pairs), then the
        second of them."""
        (_, i0), (decoded, i1) = recent[-2:]
        before = recent[-3][1] if len(recent) == 3 else i0
        outer = (before, after)
        for mean, heat in engine.frames_between(i0, i1, times, outer, consecutive=True):
            writers[0].write(mean.permute(1, 2, 0).numpy())
            if heat is not None:
                writers[1].write(heat)
        write_input(decoded, i1)

    try:
        recent: list = []  # the last (at most 3) frames not yet done with, oldest first
        for decoded in frames:
            frame = rgb(decoded)
            if not writers:
                h, w = frame.shape[-2:]
                writers = [VideoWriter(p, rate, w, h, crf) for p in outputs]
                write_input(decoded, frame)
            elif frame.shape != recent[-1][1].shape:
                raise VFIError(f"{source}: frame size changes mid-stream")
            if len(recent) >= 2:
                write_between(recent, frame)
            recent = [*recent, (decoded, frame)][-3:]
        if not recent:
            raise VFIError(f"cannot decode video file {source}: it holds no frames")
        if len(recent) == 1:
            raise VFIError(f"{source} holds a single frame: slow motion needs at least two")
        write_between(recent, recent[-1][1])
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise


def interpolate_pair(cfg: DictConfig, engine: Interpolator, out_dir: Path) -> list[Path]:
    if isinstance(cfg.frames, str) or len(cfg.frames) != 2:
        raise VFIError(f"frames must list two images (frames=[a.png,b.png]), got {cfg.frames}")
    times = check_times(cfg.times if cfg.times is not None else [0.5])
    i0, i1 = (read_image(p) for p in cfg.frames)
    if i0.shape != i1.shape:
        raise VFIError(
            f"frames differ in size: {cfg.frames[0]} {i0.shape[1]}x{i0.shape[2]}, "
            f"{cfg.frames[1]} {i1.shape[1]}x{i1.shape[2]}"
        )
    folder = Path(cfg.output) if cfg.output else out_dir
    if not folder.is_dir():
        raise VFIError(f"cannot write output {folder}: it is not an existing folder")
    check_output(folder / "probe")
    written = []
    results = engine.frames_between(i0, i1, times)
    for t, (mean, heat) in zip(times, results, strict=True):
        written.append(save_png(mean.permute(1, 2, 0).numpy(), folder / f"frame_t{t:g}.png"))
        if heat is not None:
            written.append(save_png(heat, folder / f"std_t{t:g}.png"))
    return written


@entry_point("vfi.interpolate")
def interpolate(cfg: DictConfig) -> list[Path]:
    if (cfg.input is None) == (cfg.frames is None):
        raise VFIError("give either input=<video> (video mode) or frames=[a.png,b.png] (pair mode)")
    ckpt_path = checkpoint_or_release(
        cfg.ckpt_path, cfg.get("model") is not None, Path(cfg.paths.log_dir) / "train"
    )
    if ckpt_path:
        model = model_from_checkpoint(
            load_checkpoint(ckpt_path),
            cfg.paths.lpips_backbone,
            cfg.get("motion_refresh"),
            cfg.get("flip_views"),
            cfg.get("sample_noise"),
            cfg.get("motion_views"),
        )
    else:
        model = instantiate(cfg.model)
    device = (
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    samples = cfg.num_samples or getattr(model, "samples", {}).get("test", 1)
    # a std over samples needs two, unless the model has one from a single pass (the bridge)
    one_pass = getattr(model, "one_pass_std", False)
    samples = max(int(samples), 2 if cfg.uncertainty and not one_pass else 1)
    engine = Interpolator(
        model, samples, cfg.uncertainty, cfg.tile, cfg.tile_overlap, device, cfg.precision
    )
    out_dir = Path(cfg.paths.output_dir)
    if cfg.input is not None:
        written = interpolate_video(cfg, engine, out_dir)
    else:
        written = interpolate_pair(cfg, engine, out_dir)
    if HydraConfig.initialized():
        for path in written:
            print(path)
    return written


def main() -> None:
    run_hydra("vfi.interpolate", "interpolate", interpolate)


if __name__ == "__main__":
    main()
