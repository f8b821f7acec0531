"""A test callback: every process appends the ids of each training batch it takes to
``<out>/rank<global rank>.jsonl`` as {"epoch", "ids"}."""

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SeenItems(Callback):
    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "ids": list(batch["id"])}) + "\n")
