"""python -m vfi.eval ckpt_path=... [data=...] [baselines=[blend,classical,ffmpeg]]: score a
checkpoint (or a baseline model=...) and any baselines on one test set, in one table.

Every scored item is appended to ``items/<model>__<data>.jsonl`` as soon as its batch ends;
``resume=<earlier eval folder>`` continues in that folder and scores only the items missing
there (a stream, which cannot skip items, is scored anew). The run writes metrics.json,
results.md and report.png (metrics per model and the sparsification curves of models scored
with several samples). Besides a row per model the tables get a row per motion bin
(``motion_bins``, items split by ``motion_px`` as SNU-FILM's easy / medium / hard / extreme)
and, with ``per_clip=true``, per clip and per clip and bin. A checkpoint (or ``model=``) scored
with baselines is also compared with each of them item by item, in every group: the mean
difference of PSNR, SSIM and LPIPS, its 95% interval and the items won (``paired`` in
metrics.json, a further table in results.md).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import resource
from itertools import pairwise
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import Dataset, IterableDataset, Subset

from vfi.callbacks import EvalPanels, ItemRows
from vfi.errors import VFIError
from vfi.metrics import PAIRED_SCORES, paired_difference
from vfi.models.checkpoint import model_from_checkpoint
from vfi.utils.checkpoint import checkpoint_or_release, load_checkpoint
from vfi.utils.panels import log_panel
from vfi.utils.report import aggregate, plot_report
from vfi.utils.run import (
    CONF_DIR,
    close_loggers,
    device_settings,
    entry_point,
    instantiate_loggers,
    run_hydra,
    wandb_loggers,
    write_atomic,
    write_metrics,
)


def sequence_test_data(data_cfg: DictConfig, factor: int) -> DictConfig:
    """The data config with every test item turned into frames i, i+1, ..., i+factor (the
    inner factor - 1 frames are scored): ``gap = factor`` and ``step = 1`` for video,
    ``num_frames = factor + 1`` for flying data."""
    if not isinstance(factor, int) or factor < 2:
        raise VFIError(f"factor must be an integer of at least 2, got {factor!r}")
    test = data_cfg.get("test")
    target = str((test or {}).get("_target_", ""))
    windowed = (
        "ClipsDataset",
        "VideoFileDataset",
        "VideoFilesDataset",
        "VideoStreamDataset",
        "benchmarks.frames",
    )
    if not target.endswith((*windowed, "FlyingDataset")):
        raise VFIError(
            f"factor={factor} needs video, frames or flying test data, got {target or None}"
        )
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    if target.endswith("FlyingDataset"):
        data_cfg.test.num_frames = factor + 1
    else:
        data_cfg.test.gap = factor
        if "step" in data_cfg.test:
            data_cfg.test.step = 1
    return data_cfg


class IndexedDataset(Dataset):
    """A dataset whose items carry their ``index`` (the key that resuming skips by)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict | None:
        item = self.dataset[index]
        if item is not None:
            item["index"] = index
        return item


def read_rows(path: Path) -> list[dict]:
    """The complete rows of a JSONL file (a line cut short by a crash is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def peak_memory_mb() -> float:
    """Peak CUDA memory allocated (after a reset per model) or the process's peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def baseline(name: str, paths: DictConfig):
    """A baseline model from its config (``vfi/conf/model/<name>.yaml``)."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file() or name in ("resshift", "warp_posterior", "autoencoder"):
        raise VFIError(f"unknown baseline {name!r} (expected blend, classical, ffmpeg or rife)")
    cfg = OmegaConf.merge({"paths": paths}, {"model": OmegaConf.load(path)})
    return instantiate(cfg.model)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


@entry_point("vfi.eval")
def evaluate(cfg: DictConfig) -> list[dict]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    choices = dict(HydraConfig.get().runtime.choices)
    thresholds = motion_thresholds(cfg.get("motion_bins"))
    out_dir = Path(cfg.resume) if cfg.get("resume") else Path(cfg.paths.output_dir)
    if cfg.get("resume") and not out_dir.is_dir():
        raise VFIError(f"resume folder not found: {out_dir}")
    ckpt_path = checkpoint_or_release(
        cfg.ckpt_path, cfg.get("model") is not None, Path(cfg.paths.log_dir) / "train"
    )
    data_cfg, data_name = cfg.get("data"), choices.get("data")
    jobs = []
    if ckpt_path:
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt["vfi_config"]
        switches = {name: cfg.get(name) for name in ("flip_views", "sample_noise", "motion_views")}
        refresh = cfg.get("motion_refresh")
        model = model_from_checkpoint(ckpt, cfg.paths.lpips_backbone, refresh, **switches)
        label = f"{saved['choices'].get('model')} ({Path(ckpt_path).name})"
        label += "" if refresh is None else f" refresh={refresh}"
        label += "".join(f" {k}={v}" for k, v in switches.items() if v is not None)
        jobs.append((label, model))
        if data_cfg is None:
            data_cfg, data_name = OmegaConf.create(saved["data"]), saved["choices"].get("data")
    elif cfg.get("model") is not None:  # labelled with the overrides that change the model
        overrides = HydraConfig.get().overrides.task
        changed = [o for o in overrides if o.startswith("model.") and "lpips_backbone" not in o]
        jobs.append((" ".join([choices["model"], *changed]), instantiate(cfg.model)))
    jobs += [(name, baseline(name, cfg.paths)) for name in cfg.get("baselines") or []]
    if data_cfg is None:
        raise VFIError("no test data: give data=... (e.g. data=clips)")
    if cfg.get("factor") is not None:
        data_cfg = sequence_test_data(data_cfg, cfg.factor)
        data_name = f"{data_name} x{cfg.factor}"
    datamodule = instantiate(data_cfg)
    datamodule.setup("test")
    loggers = instantiate_loggers(cfg.logger)
    try:
        records, groups, curves, scored = score_jobs(
            cfg, jobs, datamodule, str(data_name), out_dir, loggers, thresholds
        )
        paired = []
        if (ckpt_path or cfg.get("model") is not None) and len(jobs) > 1:
            per_clip = bool(cfg.get("per_clip"))
            paired = paired_records(scored, jobs[0][0], str(data_name), thresholds, per_clip)
        print(write_metrics(records + groups, out_dir, paired))
        report = plot_report(records, curves, out_dir / "report.png")
        log_panel(loggers, "eval/report", report)
        for logger in wandb_loggers(loggers):
            names = sorted({k for r in records for k in r["metrics"]})
            rows = [[r["model"], r["data"], *(r["metrics"].get(k) for k in names)] for r in records]
            logger.log_table(key="eval/results", columns=["model", "data", *names], data=rows)
    finally:
        close_loggers(loggers)
    return records


def score_jobs(
    cfg, jobs, datamodule, data_name: str, out_dir: Path, loggers: list, thresholds: list[float]
):
    """Score every (label, model) on the test set, appending per-item rows to its JSONL and
    skipping the items already there; returns the records (``{"model", "data", "items",
    "metrics"}``, one per model), the records of their groups of items (:func:`group_records`),
    the mean curves per model and the per-item rows per model."""
    dataset = datamodule.datasets["test"]
    records, groups, curves, scored = [], [], {}, {}
    for label, model in jobs:
        # every model draws from the same seeded state, whichever others are in the run
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.get("num_samples"):
            model.samples["test"] = int(cfg.num_samples)
        log = out_dir / "items" / f"{slug(label)}__{slug(str(data_name))}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        rows = read_rows(log)
        if isinstance(dataset, IterableDataset):  # a stream cannot skip: it is scored anew
            rows.clear()
            log.write_text("")
            todo = dataset
        else:
            if log.is_file():  # without a line cut short by a crash, so the next rows stay whole
                write_atomic(log, "".join(json.dumps(row) + "\n" for row in rows))
            done = {row["index"] for row in rows}
            remaining = [i for i in range(len(dataset)) if i not in done]
            todo = Subset(IndexedDataset(dataset), remaining) if remaining else None
        if todo is not None:
            with log.open("a") as sink:

                def write(batch_rows, sink=sink, rows=rows, log=log):
                    try:
                        sink.write("".join(json.dumps(r) + "\n" for r in batch_rows))
                        sink.flush()
                    except OSError as exc:  # a full disk: the complete rows stay to resume from
                        raise VFIError(
                            f"cannot write {log}: {exc.strerror or exc} (resume=<this run's "
                            "folder> scores the rest)"
                        ) from None
                    rows.extend(batch_rows)

                datamodule.datasets["test"] = todo
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                trainer = instantiate(
                    cfg.trainer,
                    logger=loggers or False,
                    callbacks=[
                        L.pytorch.callbacks.RichProgressBar(),
                        ItemRows(write),
                        EvalPanels(name=f"{slug(label)}__"),
                    ],
                )
                device_settings(trainer, datamodule)
                trainer.test(model, datamodule=datamodule)
        metrics, curves[label] = aggregate(rows)
        if not metrics:
            raise VFIError(f"no item of {data_name} was scored (is the test set empty?)")
        metrics["test/peak_memory_mb"] = peak_memory_mb()
        records.append({"model": label, "data": data_name, "items": len(rows), "metrics": metrics})
        groups += group_records(label, data_name, rows, thresholds, bool(cfg.get("per_clip")))
        scored[label] = rows
    return records, groups, curves, scored


def item_groups(
    data_name: str, rows: list[dict], thresholds: list[float], per_clip: bool
) -> dict[str, list[dict]]:
    """One model's per-item rows in their non-empty groups, by label: one per motion bin
    (``data [motion hard 12-32 px]``) and, with ``per_clip``, one per clip (``data [bikes]``)
    followed by one per bin of that clip (``data [bikes, motion hard 12-32 px]``)."""
    named = {f"{data_name} [{b}]": group for b, group in motion_groups(rows, thresholds).items()}
    if per_clip:
        for clip, clip_rows in clip_groups(rows).items():
            named[f"{data_name} [{clip}]"] = clip_rows
            for b, group in motion_groups(clip_rows, thresholds).items():
                named[f"{data_name} [{clip}, {b}]"] = group
    return named


def group_records(
    label: str, data_name: str, rows: list[dict], thresholds: list[float], per_clip: bool
) -> list[dict]:
    """Records (``{"model", "data", "items", "metrics"}``) of the groups of one model's
    per-item rows (:func:`item_groups`)."""
    return [
        {"model": label, "data": data, "items": len(group), "metrics": aggregate(group)[0]}
        for data, group in item_groups(data_name, rows, thresholds, per_clip).items()
    ]


def paired_records(
    scored: dict[str, list[dict]],
    model: str,
    data_name: str,
    thresholds: list[float],
    per_clip: bool,
) -> list[dict]:
    """``model`` against every other model of ``scored`` (label: per-item rows), item by item:
    per baseline and per group (all items, then :func:`item_groups`) a record ``{"model",
    "baseline", "data", "items", "<score>": paired_difference}`` for PSNR, SSIM and LPIPS
    (:func:`vfi.metrics.paired_difference`), over the items both scored."""
    groups = {data_name: scored[model]}
    groups.update(item_groups(data_name, scored[model], thresholds, per_clip))
    records = []
    for other, other_rows in scored.items():
        if other == model:
            continue
        by_index = {row["index"]: row for row in other_rows}
        for data, rows in groups.items():
            pairs = [(row, by_index[row["index"]]) for row in rows if row["index"] in by_index]
            diffs = {}
            for name in PAIRED_SCORES:
                both = [(a[name], b[name]) for a, b in pairs if name in a and name in b]
                if both:
                    ours, theirs = zip(*both, strict=True)
                    diffs[name] = paired_difference(list(ours), list(theirs), name)
            if diffs:
                head = {"model": model, "baseline": other, "data": data, "items": len(pairs)}
                records.append(head | diffs)
    return records


def clip_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Per-item rows grouped by the clip their ``id`` names (the part before the first /)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get("id", "")).split("/")[0], []).append(row)
    return groups


MOTION_NAMES = ("easy", "medium", "hard", "extreme")  # SNU-FILM's, for 3 thresholds


def motion_thresholds(value) -> list[float]:
    """The ``motion_bins`` option as thresholds in pixels, after checking it is a list of
    increasing positive finite numbers; [] (no motion rows) for null or []."""
    value = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    if value is None:
        return []
    numbers = isinstance(value, list) and all(
        isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < math.inf for t in value
    )
    if not numbers or any(a >= b for a, b in pairwise(value)):
        raise VFIError(
            "motion_bins must be increasing positive thresholds in pixels, e.g. [4,12,32] "
            f"(or null for no motion rows), got {value!r}"
        )
    return [float(t) for t in value]


def motion_labels(thresholds: list[float]) -> list[str]:
    """The labels of the N + 1 bins that N thresholds in pixels make: SNU-FILM's names for
    3 (``motion easy <4 px``, ``motion medium 4-12 px``, ``motion hard 12-32 px``,
    ``motion extreme >=32 px``), else ``motion0 <t0 px``, ``motion1 t0-t1 px``, ..."""
    edges = [f"{t:g}" for t in thresholds]
    ranges = [f"<{edges[0]}", *(f"{a}-{b}" for a, b in pairwise(edges)), f">={edges[-1]}"]
    if len(thresholds) == len(MOTION_NAMES) - 1:
        names = [f"motion {name}" for name in MOTION_NAMES]
    else:
        names = [f"motion{k}" for k in range(len(ranges))]
    return [f"{name} {r} px" for name, r in zip(names, ranges, strict=True)]


def motion_groups(rows: list[dict], thresholds: list[float]) -> dict[str, list[dict]]:
    """Per-item rows grouped by motion bin, keyed by :func:`motion_labels` in bin order: a
    row goes to bin k, the number of thresholds at or below its ``motion_px`` (a value on a
    threshold opens the upper bin). Empty bins and rows without ``motion_px`` (scored before
    it existed) are left out; no thresholds, no groups."""
    if not thresholds:
        return {}
    bins: list[list[dict]] = [[] for _ in range(len(thresholds) + 1)]
    for row in rows:
        if "motion_px" in row:
            bins[bisect.bisect_right(thresholds, row["motion_px"])].append(row)
    return {label: b for label, b in zip(motion_labels(thresholds), bins, strict=True) if b}


def main() -> None:
    run_hydra("vfi.eval", "eval", evaluate)


if __name__ == "__main__":
    main()
