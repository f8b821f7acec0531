"""python -m vfi.data.bench data=<name> [data.root=...]: items per second of one split's
DataLoader for 1, 2 and 4 workers, as a table (``split``, ``workers``, ``num_items`` in
vfi/conf/data_bench.yaml)."""

from __future__ import annotations

import time
import warnings

from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import track
from rich.table import Table

from vfi.errors import VFIError
from vfi.utils.run import entry_point, run_hydra


def items_per_second(datamodule, split: str, workers: int, num_items: int) -> float:
    """Items per second over the first ``num_items`` items of a pass over ``split`` (a
    stream's shuffle buffer filling included), after a first pass of two batches has started
    the (persistent) workers."""
    datamodule.num_workers = workers
    loader = getattr(datamodule, f"{split}_dataloader")()
    for _ in zip(range(2), loader, strict=False):
        pass
    seen, start = 0, time.perf_counter()
    for batch in track(loader, description=f"{workers} worker(s)", transient=True):
        seen += len(batch.get("id", ()))
        if seen >= num_items:
            break
    if not seen:
        raise VFIError(f"data.{split} yielded no items to time")
    return seen / (time.perf_counter() - start)


@entry_point("vfi.data.bench")
def bench(cfg: DictConfig) -> list[tuple[int, float]]:
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    if cfg.split not in ("train", "val", "test"):
        raise VFIError(f"split must be train, val or test, got {cfg.split!r}")
    datamodule = instantiate(
        cfg.data, **{s: None for s in ("train", "val", "test") if s != cfg.split}
    )
    datamodule.setup("fit" if cfg.split != "test" else "test")
    if cfg.split not in datamodule.datasets:
        raise VFIError(f"the data config has no {cfg.split} split")
    rows = [(w, items_per_second(datamodule, cfg.split, w, cfg.num_items)) for w in cfg.workers]
    table = Table(title=f"data loading, {cfg.split} split")
    for column in ("workers", "items/s", "ms/item"):
        table.add_column(column, justify="right")
    for workers, rate in rows:
        table.add_row(str(workers), f"{rate:.1f}", f"{1000 / rate:.2f}")
    Console().print(table)
    return rows


def main() -> None:
    run_hydra("vfi.data.bench", "data_bench", bench)


if __name__ == "__main__":
    main()
