"""DDP safety of scoring and training: rank-dependent scores, uneven calibration sets and
all-corrupt batches, in a real 2-rank gloo group and against pooled single-process values."""

import socket
from types import SimpleNamespace
from unittest.mock import PropertyMock, patch

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from vfi.models.baselines import BlendInterpolator
from vfi.utils.dist import gather_objects
from vfi.utils.report import aggregate

# rank 0 scored two items, one of them an ATD "easy" item; rank 1 one item and no subset
RANK_ROWS = [
    [{"index": 0, "psnr": 30.0, "psnr_easy": 31.0}, {"index": 1, "psnr": 20.0}],
    [{"index": 2, "psnr": 25.0, "ause": 0.5}],
]


def _gather_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        rows = [row for part in gather_objects(RANK_ROWS[rank]) for row in part]
        ratios = gather_objects([torch.full((3 + 5 * rank,), float(rank))] if rank else [])
        torch.save({"means": aggregate(rows, "val")[0], "ratios": ratios}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_different_scores_and_sizes_get_the_pooled_means(tmp_path):
    """Keys present on one rank only (subset scores, calibration scores) and tensors of
    different sizes (an empty list on one rank) gather without a hang, and every rank logs
    the means over the pooled items."""
    out = str(tmp_path / "result")
    mp.spawn(_gather_worker, args=(_free_port(), out), nprocs=2, join=True)
    want = {"val/psnr": 25.0, "val/psnr_easy": 31.0, "val/ause": 0.5}
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got["means"] == pytest.approx(want)
        assert got["ratios"][0] == [] and got["ratios"][1][0].shape == (8,)


def test_gather_without_a_process_group_is_the_local_value():
    assert gather_objects(RANK_ROWS[0]) == [RANK_ROWS[0]]


def test_all_corrupt_batch_under_ddp_backpropagates_zero_gradients_to_every_parameter():
    """DDP's gradient all-reduce needs every rank: an empty batch gives a zero loss through
    every parameter (one process: None, Lightning skips the step)."""
    from vfi.models.warp_posterior import WarpPosteriorVFI
    from vfi.nets.flow import PyramidFlowNet, VisibilityNet
    from vfi.nets.unet import UNet

    model = WarpPosteriorVFI(
        flow_net=PyramidFlowNet(scales=[4, 2], width=8, depth=1, init="none"),
        visibility_net=VisibilityNet(width=8, depth=1),
        refiner=UNet(15, 3, base_channels=8, channel_mult=[1, 2], num_res_blocks=1, emb_dim=16),
    )
    trainer = PropertyMock()
    with patch.object(type(model), "trainer", trainer):
        trainer.return_value = SimpleNamespace(world_size=1)
        assert model.training_step({}, 0) is None
        trainer.return_value = SimpleNamespace(world_size=2)
        loss = model.training_step({}, 0)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert float(loss) == 0 and len(params) > 10
    assert all(p.grad is not None and not p.grad.any() for p in params)


def test_logged_means_are_the_item_means_over_uneven_batches(tmp_path):
    """5 items in batches of 2, 2, 1: val/psnr is the mean of the 5 items' own PSNRs,
    computed here with torchmetrics on the 8-bit frames."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from vfi.data.datamodule import collate_items
    from vfi.data.flying import FlyingDataset
    from vfi.ops import quantize

    items = [FlyingDataset(size=(32, 32), seed=3, num_frames=3)[i] for i in range(5)]
    model = BlendInterpolator()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.validate(model, DataLoader(items, batch_size=2, collate_fn=collate_items))
    want = []
    for item in items:
        tau = float(item["taus"][0])
        blend = (1 - tau) * item["I0"] + tau * item["I1"]
        pred, gt = quantize(blend.clamp(-1, 1)), quantize(item["gt"][0])
        want.append(float(peak_signal_noise_ratio(pred, gt, data_range=1.0)))
    assert float(trainer.callback_metrics["val/psnr"]) == pytest.approx(sum(want) / 5, abs=1e-4)
    assert len(model.epoch_rows["val"]) == 5


class _TwoItems(torch.utils.data.Dataset):
    """Item 0 is an ATD "easy" item (a subset score), item 1 has no level; the ground truth
    is the blend off by 0.1 (item 0) and 0.2 (item 1)."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        i0, i1 = torch.rand(2, 3, 16, 16, generator=g) * 1.2 - 0.6
        gt = (i0 + i1) / 2 + 0.1 * (i + 1)
        item = {"I0": i0, "I1": i1, "gt": gt[None], "taus": torch.tensor([0.5])}
        return item | ({"level": torch.tensor(0)} if i == 0 else {})


def test_ddp_validation_with_a_subset_score_on_one_rank_only(tmp_path):
    """2 gloo ranks, one item each; only rank 0's item has an ATD level. Validation ends
    (the old per-key sync_dist logging paired the ranks' collectives wrongly) with the
    pooled means, checked against torchmetrics on each item."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from vfi.data.datamodule import collate_items
    from vfi.ops import quantize

    model = BlendInterpolator()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    loader = DataLoader(_TwoItems(), batch_size=1, collate_fn=collate_items)
    (metrics,) = trainer.validate(model, loader)
    psnr = [
        float(
            peak_signal_noise_ratio(
                quantize((it["I0"] + it["I1"]) / 2), quantize(it["gt"][0]), data_range=1.0
            )
        )
        for it in map(_TwoItems().__getitem__, range(2))
    ]
    assert metrics["val/psnr_easy"] == pytest.approx(psnr[0], abs=1e-3)
    assert metrics["val/psnr"] == pytest.approx(sum(psnr) / 2, abs=1e-3)
