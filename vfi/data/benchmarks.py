"""The standard VFI benchmarks, each read from its documented on-disk layout.

Every function lists the layout's items as :class:`~vfi.data.items.Record` and returns an
:class:`~vfi.data.items.ImageItemDataset`; extra keyword arguments (``augment``, ``resize``,
``crop``, ``on_corrupt``) go to it. The README documents each layout and eval protocol.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from vfi.data.items import IMAGE_SUFFIXES, ImageItemDataset, Record, window_taus
from vfi.errors import VFIError

ATD_LEVELS = ("easy", "medium", "hard")
SNU_DIFFICULTIES = ("easy", "medium", "hard", "extreme")


def _folder(path: Path, name: str, layout: str, kind: str = "folder") -> Path:
    """``path`` when it is a folder; else one line saying it is missing or a file."""
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "not found"
        raise VFIError(f"{name}: {kind} {path} {state}; expected {layout}")
    return path


def _root(root: str | Path, name: str, layout: str) -> Path:
    return _folder(Path(root), name, layout, "root")


def _frame(folder: Path, stem: str) -> Path:
    """folder/stem.png or folder/stem.jpg (whichever exists; the .png path when neither)."""
    for suffix in (".png", ".jpg", ".jpeg"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return folder / f"{stem}.png"


def _checked(paths: list[Path], where: str) -> list[Path]:
    for path in paths:
        if not path.is_file():
            raise VFIError(f"{where} names a missing image: {path}")
    return paths


def _natural_key(path: Path) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name))


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural_key)


ATD_LAYOUT = (
    "<root>/train_10k/<clip>/frame{1,2,3}.jpg and <root>/test_2k_540p/<clip>/frame{1,2,3}.png "
    "(optional <root>/test_2k_annotations/<clip>/<clip>.json)"
)


def atd_shot(clip: str) -> str:
    """The shot a clip comes from: its name without the last ``_<part>`` (clips of one shot
    share it, so a split by shot never puts frames of one shot on both sides)."""
    return clip.rsplit("_", 1)[0] if "_" in clip else clip


def atd_validation_shots(clips: list[str], val_size: int) -> set[str]:
    """A deterministic set of shots holding at least ``val_size`` of ``clips`` (none when 0):
    shots in the order of the MD5 of their names."""
    shots: dict[str, int] = {}
    for clip in clips:
        shots[atd_shot(clip)] = shots.get(atd_shot(clip), 0) + 1
    chosen, count = set(), 0
    for shot in sorted(shots, key=lambda s: hashlib.md5(s.encode()).hexdigest()):
        if count >= val_size:
            break
        chosen.add(shot)
        count += shots[shot]
    return chosen


def _atd_annotation(path: Path) -> dict:
    """``level`` and ``roi`` of a test clip from its JSON (-1 and zeros when it has none)."""
    level, roi = -1, [0, 0, 0, 0]
    if path.is_file():
        try:
            info = json.loads(path.read_text())
            level = int(info["level"])
            box = info["motion_RoI"]
            roi = [int(box[k]) for k in ("x", "y", "width", "height")]
        except (ValueError, KeyError, TypeError) as exc:
            raise VFIError(
                f"bad annotation {path}: expected 'level' and 'motion_RoI' with x, y, width, "
                f"height ({exc})"
            ) from None
    return {"level": torch.tensor(level), "roi": torch.tensor(roi)}


def atd12k(root: str, split: str = "train", val_size: int = 200, **kwargs) -> ImageItemDataset:
    """ATD-12K (AnimeInterp release): frame2 is the ground truth at tau = 1/2.

    ``split``: ``train`` (train_10k without the validation shots), ``val`` (a deterministic
    split of train_10k by shot holding at least ``val_size`` clips) or ``test``
    (test_2k_540p, with ``level`` and ``roi`` from test_2k_annotations when present).
    """
    base = _root(root, "atd12k", ATD_LAYOUT)
    if split not in ("train", "val", "test"):
        raise VFIError(f"atd12k: split must be train, val or test, got {split!r}")
    folder = _folder(
        base / ("test_2k_540p" if split == "test" else "train_10k"), "atd12k", ATD_LAYOUT
    )
    clips = [p.name for p in _subdirs(folder)]
    if split != "test":
        val_shots = atd_validation_shots(clips, val_size)
        clips = [c for c in clips if (atd_shot(c) in val_shots) == (split == "val")]
        if split == "train" and not clips and val_shots:
            raise VFIError(
                f"atd12k: the validation split (data.val_size={val_size}) takes every clip of "
                f"{folder}; give a smaller data.val_size"
            )
    notes = base / "test_2k_annotations"
    notes = notes if split == "test" and notes.is_dir() else None
    records = []
    for clip in clips:
        paths = [_frame(folder / clip, f"frame{i}") for i in (1, 2, 3)]
        extra = {} if notes is None else _atd_annotation(notes / clip / f"{clip}.json")
        records.append(Record(clip, _checked(paths, f"atd12k clip {folder / clip}"), [0.5], extra))
    return ImageItemDataset(records, f"atd12k {split} ({folder})", **kwargs)


VIMEO_LAYOUT = (
    "<root>/sequences/<5 digits>/<4 digits>/im1.png ... with <root>/tri_trainlist.txt, "
    "tri_testlist.txt (septuplets: im1..im7, sep_trainlist.txt, sep_testlist.txt)"
)


def vimeo90k(
    root: str, split: str = "train", variant: str = "triplet", outer: bool = False, **kwargs
) -> ImageItemDataset:
    """Vimeo-90K. ``variant=triplet``: im1, im3 with im2 at 1/2. ``variant=septuplet``: im1,
    im7 with im2..im6 at 1/6..5/6; with ``outer``, im3, im5 with im4 at 1/2 and the outer
    neighbours im1, im7 (the 4-frame context of multi-frame networks)."""
    base = _root(root, "vimeo90k", VIMEO_LAYOUT)
    if split not in ("train", "test"):
        raise VFIError(f"vimeo90k: split must be train or test, got {split!r}")
    if variant not in ("triplet", "septuplet"):
        raise VFIError(f"vimeo90k: variant must be triplet or septuplet, got {variant!r}")
    if outer and variant != "septuplet":
        raise VFIError(
            "vimeo90k: triplets have no outer neighbours; outer=true needs variant=septuplet"
        )
    n, prefix = (3, "tri") if variant == "triplet" else (7, "sep")
    listing = base / f"{prefix}_{split}list.txt"
    if not listing.is_file():
        raise VFIError(f"vimeo90k: list file {listing} not found; expected {VIMEO_LAYOUT}")
    sequences = _folder(base / "sequences", "vimeo90k", VIMEO_LAYOUT)
    records = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        paths = _checked(
            [sequences / name / f"im{i}.png" for i in range(1, n + 1)],
            f"{listing}:{number} ({name!r})",
        )
        if outer:
            records.append(Record(name, paths[2:5], [0.5], outer=[paths[0], paths[6]]))
        else:
            records.append(Record(name, paths, window_taus(n - 1).tolist()))
    return ImageItemDataset(records, f"vimeo90k {variant} {split} ({listing})", **kwargs)


SNU_LAYOUT = (
    "<root>/test-{easy,medium,hard,extreme}.txt (or <root>/eval_modes/...), each line "
    "'I0 GT I1' paths such as data/SNU-FILM/test/GOPRO_test/<seq>/<frame>.png"
)


def _resolve(root: Path, listed: str) -> Path | None:
    """``listed`` resolved against ``root`` whatever its prefix: the first existing
    ``root / parts[i:]`` over i = 0, 1, ..."""
    parts = Path(listed).parts
    for i in range(len(parts)):
        candidate = root.joinpath(*parts[i:])
        if candidate.is_file():
            return candidate
    return None


def snufilm(root: str, difficulty: str = "medium", **kwargs) -> ImageItemDataset:
    """SNU-FILM: each line of test-<difficulty>.txt holds I0, the ground truth (1/2) and I1."""
    base = _root(root, "snufilm", SNU_LAYOUT)
    if difficulty not in SNU_DIFFICULTIES:
        raise VFIError(
            f"snufilm: difficulty must be one of {', '.join(SNU_DIFFICULTIES)}, got {difficulty!r}"
        )
    candidates = [base / f"test-{difficulty}.txt", base / "eval_modes" / f"test-{difficulty}.txt"]
    listing = next((p for p in candidates if p.is_file()), None)
    if listing is None:
        raise VFIError(f"snufilm: list file {candidates[0]} not found; expected {SNU_LAYOUT}")
    records = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{listing}:{number}"
        if len(fields) != 3:
            raise VFIError(f"{where}: expected three paths (I0, GT, I1), got {len(fields)}")
        paths = [_resolve(base, f) for f in fields]
        for listed, path in zip(fields, paths, strict=True):
            if path is None:
                raise VFIError(f"{where} names a missing image: {listed} (under {base})")
        i0, gt, i1 = paths
        item_id = f"{difficulty}/{gt.parent.name}/{gt.stem}"
        records.append(Record(item_id, [i0, gt, i1], [0.5]))
    return ImageItemDataset(records, f"snufilm {difficulty} ({listing})", **kwargs)


UCF_LAYOUT = (
    "<root>/<id>/frame_00.png, frame_01_gt.png, frame_02.png (DVF) or "
    "<root>/<id>/frame1.png, frame2.png, framet.png (QVI)"
)
UCF_NAMES = {"dvf": ("frame_00", "frame_01_gt", "frame_02"), "qvi": ("frame1", "framet", "frame2")}


def ucf101(root: str, **kwargs) -> ImageItemDataset:
    """UCF101 triplets in the DVF or the QVI layout (detected from the first item)."""
    base = _root(root, "ucf101", UCF_LAYOUT)
    folders = _subdirs(base)
    if not folders:
        raise VFIError(
            f"ucf101: the dataset is empty (no item folders in {base}); expected {UCF_LAYOUT}"
        )
    layout = next(
        (k for k, names in UCF_NAMES.items() if _frame(folders[0], names[0]).is_file()), None
    )
    if layout is None:
        raise VFIError(f"ucf101: {folders[0]} matches neither layout; expected {UCF_LAYOUT}")
    records = [
        Record(
            f.name,
            _checked([_frame(f, n) for n in UCF_NAMES[layout]], f"ucf101 ({layout}) item {f}"),
            [0.5],
        )
        for f in folders
    ]
    return ImageItemDataset(records, f"ucf101 {layout} ({base})", **kwargs)


MIDDLEBURY_LAYOUT = (
    "<root>/other-data/<Seq>/frame10.png, frame11.png and "
    "<root>/other-gt-interp/<Seq>/frame10i11.png"
)


def middlebury(root: str, **kwargs) -> ImageItemDataset:
    """Middlebury "other" set: frame10, frame11 and the ground truth frame10i11 at 1/2 (the
    sequences that have a ground truth)."""
    base = _root(root, "middlebury", MIDDLEBURY_LAYOUT)
    data = _folder(base / "other-data", "middlebury", MIDDLEBURY_LAYOUT)
    truth = _folder(base / "other-gt-interp", "middlebury", MIDDLEBURY_LAYOUT)
    records = []
    for seq in _subdirs(truth):
        paths = [
            data / seq.name / "frame10.png",
            seq / "frame10i11.png",
            data / seq.name / "frame11.png",
        ]
        records.append(Record(seq.name, _checked(paths, f"middlebury sequence {seq.name}"), [0.5]))
    return ImageItemDataset(records, f"middlebury ({base})", **kwargs)


FRAMES_LAYOUT = "<root>/<sequence>/<numbered frames>.png|jpg (or the numbered frames in <root>)"


def frame_windows(count: int, gap: int, stride: int, start: int = 0) -> list[int]:
    """First frames i of the windows (i, ..., i + gap) of a sequence of ``count`` frames."""
    if not isinstance(stride, int) or stride < 1:
        raise VFIError(f"stride must be a positive integer, got {stride!r}")
    return list(range(start, count - gap, stride))


def frames(root: str, gap: int = 2, stride: int = 1, start: int = 0, **kwargs) -> ImageItemDataset:
    """Folders of numbered frames (DAVIS, Xiph, ...): items are frames i and i + gap with every
    frame between them as ground truth at j / gap, for i = start, start + stride, ..."""
    base = _root(root, "frames", FRAMES_LAYOUT)
    taus = window_taus(gap).tolist()

    def images(folder: Path) -> list[Path]:
        found = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        return sorted(found, key=_natural_key)

    top = images(base)
    sequences = [(base, top)] if top else [(seq, images(seq)) for seq in _subdirs(base)]
    records = []
    for seq, files in sequences:
        for i in frame_windows(len(files), gap, stride, start):
            name = f"{seq.name}/{files[i].stem}"
            records.append(Record(name, files[i : i + gap + 1], taus))
    if not records:
        raise VFIError(
            f"frames: the dataset is empty (no sequence in {base} has more than gap={gap} "
            f"frames); expected {FRAMES_LAYOUT}"
        )
    return ImageItemDataset(records, f"frames ({base})", **kwargs)
