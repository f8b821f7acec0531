"""One LightningDataModule for every source: the train/val/test datasets come from the config."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
from torch.utils.data import ConcatDataset, DataLoader, Dataset


class VFIDataModule(L.LightningDataModule):
    """Args:
    train, val, test: dataset factories (Hydra partials) or None; built in ``setup``. A list of
        factories is served as the concatenation of their datasets.
    batch_size: training batch size; eval_batch_size: validation and test batch size.
    num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        train: Callable[[], Dataset] | list[Callable[[], Dataset]] | None = None,
        val: Callable[[], Dataset] | None = None,
        test: Callable[[], Dataset] | None = None,
        batch_size: int = 8,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.factories = {"train": train, "val": val, "test": test}
        self.datasets: dict[str, Dataset] = {}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            factory = self.factories[split]
            if split in self.datasets or factory is None:
                continue
            if isinstance(factory, Sequence):
                self.datasets[split] = ConcatDataset([make() for make in factory])
            else:
                self.datasets[split] = factory()

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
