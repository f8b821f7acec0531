"""python -m vfi.eval ckpt_path=... [data=...] [baselines=[blend,classical,ffmpeg]]: score a
checkpoint (or a baseline model=...) and any baselines on one test set, in one table.

Every scored item is appended to ``items/<model>__<data>.jsonl`` as soon as its batch ends;
``resume=<earlier eval folder>`` continues in that folder and scores only the items missing
there. The run writes metrics.json, results.md and report.png (metrics per model and the
sparsification curves of models scored with several samples).
"""

from __future__ import annotations

import json
import re
import resource
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, IterableDataset, Subset

from vfi.callbacks import EvalPanels, ItemRows
from vfi.errors import VFIError
from vfi.utils.checkpoint import checkpoint_or_release, load_checkpoint, model_from_checkpoint
from vfi.utils.panels import log_panel, wandb_loggers
from vfi.utils.report import aggregate, plot_report
from vfi.utils.run import (
    CONF_DIR,
    close_loggers,
    entry_point,
    instantiate_loggers,
    run_hydra,
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
    windowed = ("ClipsDataset", "VideoFileDataset", "VideoStreamDataset", "benchmarks.frames")
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
        raise VFIError(f"unknown baseline {name!r} (expected blend, classical or ffmpeg)")
    cfg = OmegaConf.merge({"paths": paths}, {"model": OmegaConf.load(path)})
    return instantiate(cfg.model)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


@entry_point("vfi.eval")
def evaluate(cfg: DictConfig) -> list[dict]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    choices = dict(HydraConfig.get().runtime.choices)
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
        refresh, flips = cfg.get("motion_refresh"), cfg.get("flip_views")
        model = model_from_checkpoint(ckpt, cfg.paths.lpips_backbone, refresh, flips)
        label = f"{saved['choices'].get('model')} ({Path(ckpt_path).name})"
        label += "" if refresh is None else f" refresh={refresh}"
        jobs.append((label if flips is None else f"{label} flip_views={flips}", model))
        if data_cfg is None:
            data_cfg, data_name = OmegaConf.create(saved["data"]), saved["choices"].get("data")
    elif cfg.get("model") is not None:
        jobs.append((choices["model"], instantiate(cfg.model)))
    jobs += [(name, baseline(name, cfg.paths)) for name in cfg.get("baselines") or []]
    if data_cfg is None:
        raise VFIError("no test data: give data=... (e.g. data=clips)")
    if cfg.get("factor") is not None:
        data_cfg = sequence_test_data(data_cfg, cfg.factor)
        data_name = f"{data_name} x{cfg.factor}"
    for _, model in jobs:  # one-line refusals name the data being scored
        model.run_config = {**(model.run_config or {}), "choices": {"data": str(data_name)}}
    datamodule = instantiate(data_cfg)
    datamodule.setup("test")
    loggers = instantiate_loggers(cfg.logger)
    try:
        records, clip_records, curves = score_jobs(
            cfg, jobs, datamodule, str(data_name), out_dir, loggers
        )
        print(write_metrics(records + clip_records, out_dir))
        report = plot_report(records, curves, out_dir / "report.png")
        log_panel(loggers, "eval/report", report)
        for logger in wandb_loggers(loggers):
            names = sorted({k for r in records for k in r["metrics"]})
            rows = [[r["model"], r["data"], *(r["metrics"].get(k) for k in names)] for r in records]
            logger.log_table(key="eval/results", columns=["model", "data", *names], data=rows)
    finally:
        close_loggers(loggers)
    return records


def score_jobs(cfg, jobs, datamodule, data_name: str, out_dir: Path, loggers: list):
    """Score every (label, model) on the test set, appending per-item rows to its JSONL and
    skipping the items already there; returns the records, the per-clip records (with
    ``per_clip=true``; else empty) and the mean curves per model."""
    dataset = datamodule.datasets["test"]
    records, clip_records, curves = [], [], {}
    for label, model in jobs:
        if cfg.get("num_samples"):
            model.samples["test"] = int(cfg.num_samples)
        log = out_dir / "items" / f"{slug(label)}__{slug(str(data_name))}.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        rows = read_rows(log)
        if isinstance(dataset, IterableDataset):
            todo = dataset
        else:
            done = {row["index"] for row in rows}
            remaining = [i for i in range(len(dataset)) if i not in done]
            todo = Subset(IndexedDataset(dataset), remaining) if remaining else None
        if todo is not None:
            with log.open("a") as sink:

                def write(batch_rows, sink=sink, rows=rows):
                    sink.write("".join(json.dumps(r) + "\n" for r in batch_rows))
                    sink.flush()
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
                trainer.test(model, datamodule=datamodule)
        metrics, curves[label] = aggregate(rows)
        if not metrics:
            raise VFIError(f"no item of {data_name} was scored (is the test set empty?)")
        metrics["test/peak_memory_mb"] = peak_memory_mb()
        records.append({"model": label, "data": data_name, "metrics": metrics})
        if cfg.get("per_clip"):
            for clip, group in clip_groups(rows).items():
                clip_metrics = aggregate(group)[0]
                clip_records.append(
                    {"model": label, "data": f"{data_name} [{clip}]", "metrics": clip_metrics}
                )
    return records, clip_records, curves


def clip_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Per-item rows grouped by the clip their ``id`` names (the part before the first /)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get("id", "")).split("/")[0], []).append(row)
    return groups


def main() -> None:
    run_hydra("vfi.eval", "eval", evaluate)


if __name__ == "__main__":
    main()
