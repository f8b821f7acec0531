"""Small benchmark trees in each documented layout. Every frame is a flat image whose grey
level encodes its own identity, so tests can check frame order and ground-truth assignment."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from PIL import Image

SIZE = (37, 50)  # odd on purpose: nothing in the data path may assume a multiple of 32


def write_frame(path: Path, value: int, size=SIZE, mode: str = "RGB") -> Path:
    """A flat image of grey level ``value`` (RGB, or grey ``L`` / ``RGBA``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((*size, 3), value, np.uint8)
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, quality=100) if path.suffix == ".jpg" else image.save(path)
    return path


def level(image) -> int:
    """The grey level of an item image in [-1, 1] (rounded, so lossy JPEG still reads back)."""
    return round(float((image.float().mean() + 1) * 127.5))


def atd12k(root: Path) -> Path:
    """train_10k: 6 clips of 3 shots (jpg); test_2k_540p: 3 clips (png), 2 annotated."""
    train = ["Disney_a_s1", "Disney_a_s2", "Japan_b_s1", "Japan_b_s2", "Japan_b_s3", "Disney_c_s1"]
    for c, clip in enumerate(train):
        for f in (1, 2, 3):
            write_frame(root / "train_10k" / clip / f"frame{f}.jpg", 30 * c + 10 * f)
    for c, clip in enumerate(["test_a", "test_b", "test_c"]):
        for f in (1, 2, 3):
            write_frame(root / "test_2k_540p" / clip / f"frame{f}.png", 30 * c + 10 * f)
    for clip, lvl in (("test_a", 0), ("test_c", 2)):
        note = root / "test_2k_annotations" / clip / f"{clip}.json"
        note.parent.mkdir(parents=True)
        box = {"x": 2, "y": 3, "width": 40, "height": 33}
        note.write_text(json.dumps({"level": lvl, "motion_RoI": box}))
    return root


def vimeo90k(root: Path, septuplet: bool = False, num_train: int = 3) -> Path:
    """``num_train`` sequences in the train list (3 by default), two in the test list; frame i
    of sequence s has level 40 s + 5 i (mod 256)."""
    n, prefix = (7, "sep") if septuplet else (3, "tri")
    train = ["00001/0001", "00001/0002", "00002/0001"]
    train += [f"00004/{k:04d}" for k in range(1, num_train - 2)]
    names = [*train[:num_train], "00003/0007", "00003/0008"]
    for s, name in enumerate(names):
        for i in range(1, n + 1):
            write_frame(root / "sequences" / name / f"im{i}.png", (40 * s + 5 * i) % 256)
    (root / f"{prefix}_trainlist.txt").write_text("\n".join(names[:-2]) + "\n")
    (root / f"{prefix}_testlist.txt").write_text("\n".join(names[-2:]) + "\n\n")
    return root


def snufilm(root: Path) -> Path:
    """test-easy.txt listing two triplets with the release's data/SNU-FILM/ prefix."""
    lines = []
    for s, seq in enumerate(["GOPRO_test/GOPR0384", "YouTube_test/0001"]):
        paths = []
        for i in range(3):
            rel = f"test/{seq}/{i:06d}.png"
            write_frame(root / rel, 40 * s + 10 * (i + 1))
            paths.append(f"data/SNU-FILM/{rel}")
        lines.append(" ".join(paths))
    (root / "test-easy.txt").write_text("\n".join(lines) + "\n")
    return root


def ucf101(root: Path, layout: str = "dvf") -> Path:
    """Three items; I0, GT, I1 have levels 10, 20, 30 (+ 40 per item)."""
    names = {
        "dvf": ("frame_00", "frame_01_gt", "frame_02"),
        "qvi": ("frame1", "framet", "frame2"),
    }[layout]
    for k in range(3):
        for j, stem in enumerate(names):
            write_frame(root / str(k) / f"{stem}.png", 40 * k + 10 * (j + 1))
    return root


def middlebury(root: Path) -> Path:
    """Two sequences with ground truth and one without."""
    for s, seq in enumerate(["Beanbags", "Dimetrodon", "NoTruth"]):
        write_frame(root / "other-data" / seq / "frame10.png", 40 * s + 10)
        write_frame(root / "other-data" / seq / "frame11.png", 40 * s + 30)
        if seq != "NoTruth":
            write_frame(root / "other-gt-interp" / seq / "frame10i11.png", 40 * s + 20)
    return root


def frames(root: Path, counts=(7, 9)) -> Path:
    """Sequence folders of numbered frames (unpadded numbers, so order must be numeric);
    frame i of sequence s has level 100 s + 5 i."""
    for s, count in enumerate(counts):
        for i in range(count):
            write_frame(root / f"seq{s}" / f"{i}.png", 100 * s + 5 * i)
    return root


def video(path: Path, count: int = 12, size=SIZE) -> Path:
    """A lossless (FFV1) video whose frame i has grey level 10 i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "bgr0"
        for i in range(count):
            image = np.full((*size, 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
