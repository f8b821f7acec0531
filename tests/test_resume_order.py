"""Training on map-style data resumes in the middle of an epoch with the items an
uninterrupted run takes, in its order (vfi.data.datamodule.ResumableSampler, ResumableLoader)."""

import json

import pytest
from conftest import run_task
from torch.utils.data import DistributedSampler

from vfi.data.datamodule import ResumableLoader, ResumableSampler


@pytest.mark.parametrize("world", [1, 3])
def test_the_order_is_the_distributed_samplers_and_skips_what_was_taken(world, monkeypatch):
    """Each rank's order is torch's DistributedSampler's for the global seed and epoch (what
    Lightning gives DDP ranks); a resume leaves out exactly the first items taken."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    data = list(range(50))
    for rank in range(world):
        ours, reference = (
            ResumableSampler(data, world, rank),
            DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=7),
        )
        for epoch in (0, 1, 2):  # a pass per epoch, whatever epoch Lightning sets
            ours.set_epoch(0), reference.set_epoch(epoch)
            assert list(ours) == list(reference)
        reference.set_epoch(1)
        ours.resume(1, 6)
        assert list(ours) == list(reference)[6:]
        reference.set_epoch(2)
        assert list(ours) == list(reference)  # the next pass is whole
    orders = [list(ResumableSampler(data)) for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0]) == data and orders[0] != data


def test_the_loader_resumes_after_the_batches_taken():
    taken = [0]
    loader = ResumableLoader(list(range(20)), batch_size=4, drop_last=True, taken=taken,
                             sampler=ResumableSampler(list(range(20))))  # fmt: skip
    full = [b.tolist() for b in loader]
    second = [b.tolist() for b in loader]
    taken[0] = 2  # two training steps of the second pass were taken at the checkpoint
    state = loader.state_dict()
    again = ResumableLoader(list(range(20)), batch_size=4, drop_last=True, taken=[0],
                            sampler=ResumableSampler(list(range(20))))  # fmt: skip
    again.load_state_dict(state)
    assert state == {"pass": 1, "batches": 2} and [b.tolist() for b in again] == second[2:]
    again.load_state_dict({"pass": 0, "batches": 5})  # saved at a pass's end: the next, whole
    assert [b.tolist() for b in again] == second and full != second


@pytest.mark.slow
def test_a_resumed_run_takes_the_items_of_an_uninterrupted_one(task_env, tmp_path):
    """data=flying (16 items, batches of 2: 8 per epoch): 3 steps, then a resume to 11 steps,
    into the second pass over the items, take the ids of a run of 11 steps, in order (Lightning
    counts the resumed steps in a new epoch: the stopped run ended its epoch at max_steps)."""
    args = [
        "model=resshift", "data=flying", "data.train.length=16", "data.train.size=[16,16]",
        "data.batch_size=2", "data.num_workers=0", "trainer=debug", "logger=none",
        "trainer.limit_val_batches=0", "+callbacks.seen._target_=seen_items.SeenItems",
    ]  # fmt: skip
    seen = {}
    for name, runs in {"whole": [11], "stopped": [3, 11]}.items():
        ckpt = []
        for i, steps in enumerate(runs):
            out = tmp_path / f"{name}{i}"
            extra = [f"+callbacks.seen.out={tmp_path / name}", f"trainer.max_steps={steps}"]
            run_task("vfi.train", [*args, *extra, *ckpt], out)
            ckpt = [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"]
        rows = [json.loads(line) for line in open(tmp_path / name / "rank0.jsonl")]
        seen[name] = rows
    assert len(seen["whole"]) == 11 and {row["epoch"] for row in seen["whole"]} == {0, 1}
    assert [row["ids"] for row in seen["stopped"]] == [row["ids"] for row in seen["whole"]]
