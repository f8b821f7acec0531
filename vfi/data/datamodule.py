"""One LightningDataModule for every source: the train/val/test datasets come from the config."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_warn
from litdata import StreamingDataLoader, StreamingDataset
from torch import Tensor
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    get_worker_info,
)
from torch.utils.data._utils.collate import default_collate

from vfi.data.flying import render_batch
from vfi.data.video import rank_and_world
from vfi.errors import VFIError
from vfi.ops import flip_views, pad_to_multiple
from vfi.ops.dis import DISFlow
from vfi.ops.scene import scene_cuts


def collate_items(items: list[dict | None]) -> dict:
    """Batch the items, dropping the ``None`` of skipped (corrupt) ones; ``skipped`` counts
    them. A batch whose items were all skipped holds only ``skipped``. ``taus_host``: the
    items' times as Python floats, so the model's steps read them without a device sync."""
    kept = [item for item in items if item is not None]
    batch = default_collate(kept) if kept else {}
    if "taus" in batch:
        batch["taus_host"] = batch["taus"].tolist()
    batch["skipped"] = len(items) - len(kept)
    return batch


MEASURES = ("pair_flow", "pair_flow_views", "cut")


class MeasuringCollate:
    """The DataLoader's ``collate_fn``: :func:`collate_items`, then what the model asked to
    have measured on the CPU (:meth:`vfi.models.base.InterpolatorModule.batch_measures`), in
    the DataLoader's workers, so its steps run no OpenCV and wait for nothing on the host:

    - ``pair_flow``: OpenCV DIS flows F_0->1, F_1->0 between the items' (augmented) I0 and I1,
      [B, 4, H, W], the start of a DIS-initialised flow net;
    - ``pair_flow_views``: the same for the ``views`` flips of the pair that a sampler takes
      (:func:`vfi.ops.flip_views`), each padded to ``multiple`` as the sampler pads it,
      [views * B, 4, H', W'], view-major: exactly the flows the sampler would measure;
    - ``cut``: whether a scene cut separates I0 and I1 (:func:`vfi.ops.scene.scene_cuts`), [B].
    """

    def __init__(self, measures: Sequence[str] = (), views: int = 1, multiple: int = 1):
        unknown = sorted(set(measures) - set(MEASURES))
        if unknown:
            raise VFIError(f"unknown batch measures {unknown}: expected some of {list(MEASURES)}")
        self.measures = tuple(measures)
        self.views, self.multiple = views, multiple
        self.dis = DISFlow("medium")  # built in each worker on first use

    def pair_flows(self, i0: Tensor, i1: Tensor) -> Tensor:
        """DIS F_0->1, F_1->0 of each pair, [B, 4, H, W]."""
        return torch.cat([self.dis(i0, i1), self.dis(i1, i0)], dim=1)

    def __call__(self, items: list[dict | None]) -> dict:
        batch = collate_items(items)
        if "scene" in batch and self.measures:
            raise VFIError(
                f"flying items rendered on the device have no frames to measure "
                f"{list(self.measures)} on in the DataLoader: use data.train.render=cpu"
            )
        if "I0" not in batch:
            return batch
        i0, i1 = batch["I0"], batch["I1"]
        if "pair_flow" in self.measures:
            batch["pair_flow"] = self.pair_flows(i0, i1)
        if "pair_flow_views" in self.measures:
            v = self.views
            i0v, i1v = (
                pad_to_multiple(flip_views(x.repeat(v, 1, 1, 1), v, v), self.multiple)[0]
                for x in (i0, i1)
            )
            batch["pair_flow_views"] = self.pair_flows(i0v, i1v)
        if "cut" in self.measures:
            batch["cut"] = scene_cuts(i0, i1, self.dis)
        return batch


class InterleavedDataset(IterableDataset):
    """Items drawn from several datasets at random, each in proportion to its length: map-style
    parts at random indices, iterable parts (video streams, which shard themselves over workers
    and ranks) in their own order, restarted when they end. An epoch is ``len(self)`` items,
    split over the DataLoader workers."""

    def __init__(self, parts: list[Dataset], seed: int = 0):
        self.parts, self.seed, self.epoch = parts, seed, 0
        self.weights = torch.tensor([float(len(part)) for part in parts])

    def __len__(self) -> int:
        return int(self.weights.sum())

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rank = rank_and_world()[0]
        g = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch + 1009 * rank + worker)
        self.epoch += 1
        streams: dict[int, object] = {}
        for _ in range(len(self) // workers):
            j = int(torch.multinomial(self.weights, 1, generator=g))
            part = self.parts[j]
            if not isinstance(part, IterableDataset):
                yield part[int(torch.randint(len(part), (), generator=g))]
                continue
            if j not in streams:
                streams[j] = iter(part)
            item = next(streams[j], None)
            if item is None:  # the stream ended: start it again
                streams[j] = iter(part)
                item = next(streams[j])
            yield item


class ResumableSampler(DistributedSampler):
    """The training order: pass e over the items is a permutation drawn from the global seed
    (``PL_GLOBAL_SEED``, set by ``seed``) and e; with W DDP processes rank r takes every W-th
    item of it, as from Lightning's own DistributedSampler. The sampler counts its passes
    itself (Lightning's epoch count moves on when a run stops at ``max_steps``), and
    :meth:`resume` starts the next pass at a given pass and item, so a resumed run continues
    the order where the stopped one left it."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.passes, self.start = 0, 0  # the next pass, and the item of this rank it starts at

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the order follows the sampler's own passes."""

    def resume(self, passes: int, start: int) -> None:
        self.passes, self.start = passes, start

    def __iter__(self) -> Iterator[int]:
        self.epoch, start = self.passes, self.start
        self.passes, self.start = self.passes + 1, 0
        yield from list(super().__iter__())[start:]


class ResumableLoader(DataLoader):
    """The training DataLoader of map-style data, resumable in the middle of an epoch:
    Lightning keeps :meth:`state_dict` in each checkpoint (the batches the training steps took
    this epoch, counted in ``taken``) and hands it back on a resume, when
    :meth:`load_state_dict` makes the :class:`ResumableSampler` start the epoch at the first
    batch not yet taken. So a run stopped and resumed sees the items of an uninterrupted run,
    in its order."""

    def __init__(self, *args, taken: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.taken = (
            taken  # [batches the training steps took this epoch], shared with the DataModule
        )

    def __iter__(self):
        self.taken[0] = 0
        return super().__iter__()

    def state_dict(self) -> dict:
        return {"pass": self.sampler.passes - 1, "batches": self.taken[0]}

    def load_state_dict(self, state: dict) -> None:
        if state["batches"] >= len(self):  # saved at the end of a pass: the next one, whole
            self.sampler.resume(state["pass"] + 1, 0)
        else:
            self.sampler.resume(state["pass"], state["batches"] * self.batch_size)


# the keys a data preset may share with its splits by interpolation (${..root} etc.)
SHARED_OPTIONS = ("root", "val_size", "on_corrupt", "gap", "stride", "step", "cache_dir")
SHARED_OPTIONS += ("difficulty", "variant", "outer")


class VFIDataModule(L.LightningDataModule):
    """Args:
    train, val, test: dataset factories (Hydra partials) or None; built in ``setup``. A list of
        factories is served as the concatenation of their datasets, or, when one of them is a
        stream, as an :class:`InterleavedDataset`.
    batch_size: global training batch size; each of the W DDP processes loads
        batch_size / W items per step (it must divide).
    eval_batch_size: validation and test batch size per process.
    num_workers: DataLoader worker processes; None: none when the trainer runs on the CPU (the
        step's threads use every core, a worker would only compete with them), else one per
        core but one, at most 8 (:attr:`workers`).
    options: settings the split configs share by interpolation (``root``, ``gap``,
        ``difficulty``, ``on_corrupt``, ...: :data:`SHARED_OPTIONS`); any other key is refused.
    """

    def __init__(
        self,
        train: Callable[[], Dataset] | list[Callable[[], Dataset]] | None = None,
        val: Callable[[], Dataset] | None = None,
        test: Callable[[], Dataset] | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int | None = 0,
        pin_memory: bool = False,
        **options,
    ):
        super().__init__()
        unknown = sorted(set(options) - set(SHARED_OPTIONS))
        if unknown:
            raise VFIError(
                f"unknown data option data.{unknown[0]}: expected one of "
                f"{', '.join(SHARED_OPTIONS)} besides the splits and loader settings"
            )
        self.factories = {"train": train, "val": val, "test": test}
        self.datasets: dict[str, Dataset] = {}
        self.built_for = rank_and_world()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise VFIError(f"data.{name} must be an integer of at least 1, got {value!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise VFIError(f"data.num_workers must be an integer >= 0 or null, got {num_workers!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.skipped = 0
        self.train_batches_taken = [0]  # this epoch's, for ResumableLoader
        # per split, what the workers measure for the model (set by the model's setup hook)
        self.measures: dict[str, dict] = {}  # MeasuringCollate's arguments per split

    @property
    def device_batch_size(self) -> int:
        """The per-process training batch: batch_size / world size."""
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise VFIError(
                f"data.batch_size={self.batch_size} is the global batch: it must be divisible "
                f"by the number of processes ({world})"
            )
        return self.batch_size // world

    @property
    def workers(self) -> int:
        """The DataLoader workers: ``num_workers``, or for None 0 on a CPU trainer (or, with
        no trainer, where CUDA is absent) and min(8, cores - 1) otherwise."""
        if self.num_workers is not None:
            return self.num_workers
        accelerator = getattr(self.trainer, "accelerator", None)
        if accelerator is None:
            on_cpu = not torch.cuda.is_available()
        else:
            on_cpu = isinstance(accelerator, CPUAccelerator)
        return 0 if on_cpu else min(8, max(1, (os.cpu_count() or 1) - 1))

    def setup(self, stage: str | None = None) -> None:
        # datasets that split themselves over DDP ranks when built (litdata's shards) are
        # built again once the process group exists (entry points set up early, to fail fast)
        if self.built_for != rank_and_world():
            self.datasets.clear()
            self.built_for = rank_and_world()
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            factory = self.factories[split]
            if split in self.datasets or factory is None:
                continue
            if isinstance(factory, Sequence):
                parts = [make() for make in factory]
                on_device = [getattr(p, "render_on", "cpu") == "device" for p in parts]
                if any(on_device) and not all(on_device):
                    raise VFIError(
                        f"data.{split} mixes flying items rendered on the device with items "
                        "rendered in the DataLoader (one batch holds either): set every "
                        "part's render=cpu"
                    )
                streamed = any(isinstance(part, IterableDataset) for part in parts)
                self.datasets[split] = (InterleavedDataset if streamed else ConcatDataset)(parts)
            else:
                self.datasets[split] = factory()
        train = self.datasets.get("train")
        if stage in ("fit", None) and train is not None and len(train) < self.batch_size:
            raise VFIError(
                f"{len(train)} training items, fewer than one batch "
                f"(data.batch_size={self.batch_size}): training would never take a step; "
                "give more data or a smaller data.batch_size"
            )

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        if isinstance(dataset, StreamingDataset):
            # litdata shuffles and splits the shards over workers and ranks itself, and its
            # loader passes each epoch's shuffle on to the (persistent) workers
            return StreamingDataLoader(
                dataset,
                batch_size=batch_size,
                num_workers=self.workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.workers > 0,
                collate_fn=MeasuringCollate(**self.measures.get(split, {})),
            )
        options = dict(
            batch_size=batch_size,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.workers > 0,
            drop_last=shuffle,
            collate_fn=MeasuringCollate(**self.measures.get(split, {})),
        )
        if not shuffle or isinstance(dataset, IterableDataset):
            return DataLoader(dataset, **options)
        rank, world = rank_and_world()
        sampler = ResumableSampler(dataset, num_replicas=world, rank=rank)
        return ResumableLoader(dataset, sampler=sampler, taken=self.train_batches_taken, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.device_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count the skipped items and the training batches taken; draw device-rendered
        flying items on the device."""
        self.skipped += int(batch.pop("skipped", 0))
        if self.trainer is not None and self.trainer.training:
            self.train_batches_taken[0] += 1
        return render_batch(batch)

    def teardown(self, stage: str) -> None:
        if self.skipped:
            rank_zero_warn(
                f"skipped {self.skipped} items with corrupt or truncated images "
                "(on_corrupt=skip; the warnings above name them)"
            )
            self.skipped = 0
