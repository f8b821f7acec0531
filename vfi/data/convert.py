"""python -m vfi.data.convert data=<name> data.root=... out=<folder or s3://...>: each split's
items as litdata shards in ``out/<split>`` (options in vfi/conf/convert.yaml), for
``data=shards data.root=<out>``."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch.utils.data import IterableDataset

from vfi.data.shards import write_shards
from vfi.errors import VFIError
from vfi.utils.run import entry_point, run_hydra


def split_dataset(data: DictConfig, split: str):
    """The ``split`` dataset of a data config without its training augmentation (shards store
    the items as read; ``data=shards`` augments them when streaming)."""
    node = data.get(split)
    if node is None:
        raise VFIError(f"the data config has no {split} split (give splits=[...])")
    if isinstance(node, ListConfig):
        raise VFIError(f"data.{split} mixes {len(node)} sources: convert each on its own")
    factory = instantiate(node)
    dataset = factory(augment=None) if "augment" in node else factory()
    if isinstance(dataset, IterableDataset):
        raise VFIError(
            f"data.{split} is a stream, not a map-style dataset: nothing to convert "
            "(leave it out of splits=[...])"
        )
    return dataset


@entry_point("vfi.data.convert")
def convert(cfg: DictConfig) -> dict[str, dict]:
    data_name = HydraConfig.get().runtime.choices.get("data", "")
    out = str(cfg.out).rstrip("/")
    indexes = {}
    for split in cfg.splits:
        dataset = split_dataset(cfg.data, split)
        indexes[split] = write_shards(
            dataset,
            f"{out}/{split}",
            encoding=cfg.encoding,
            quality=cfg.quality,
            chunk_items=cfg.chunk_items,
            source=f"{data_name}:{split}",
            staging=cfg.staging,
            num_workers=cfg.num_workers,
        )
        meta = indexes[split]["vfi"]
        print(f"{out}/{split}: {meta['num_items']} items, {meta['skipped']} skipped")
    return indexes


def main() -> None:
    run_hydra("vfi.data.convert", "convert", convert)


if __name__ == "__main__":
    main()
