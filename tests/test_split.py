"""The built-in real-clip splits take disjoint stretches of footage: training windows, the
validation items (used to pick checkpoints, the std scale and sampler defaults) and the test
items never share a frame."""

from hydra.utils import instantiate

from tests.conftest import compose_task
from vfi.data.video import ClipsDataset


def clip_frames(dataset: ClipsDataset) -> dict[str, set[int]]:
    """Every frame index each clip's windows touch (i .. i + span, and the outer neighbours
    I_-1, I2 of the items that carry them)."""
    frames: dict[str, set[int]] = {}
    for part in dataset.datasets:
        for index, start in enumerate(part.starts):
            touched = set(range(start, start + part.span + 1)) | set(part.window_frames(index))
            frames.setdefault(part.name, set()).update(touched)
    return frames


def test_validation_and_test_frames_are_disjoint_and_unseen_in_training(tmp_path):
    cfg = compose_task("train", ["data=mixed"], tmp_path)
    val, test = (instantiate(cfg.data[split])() for split in ("val", "test"))
    assert all(part.outer for part in (*val.datasets, *test.datasets))  # I_-1, I2 included
    val_frames, test_frames = clip_frames(val), clip_frames(test)
    assert set(val_frames) == set(test_frames) == {"bigbuckbunny", "bikes", "carphone_pristine"}
    for clip in val_frames:
        assert not val_frames[clip] & test_frames[clip], clip
    train = next(p for p in cfg.data.train if p._target_.endswith("ClipsDataset"))
    # the real-clip part of training, every window (none dropped at a cut), at one small scale
    smallest = {name: min(scales) for name, scales in train.clips.items()}
    seen = clip_frames(instantiate(train)(clips=smallest, augment=None, skip_cuts=False))
    for clip in val_frames:
        assert not seen[clip] & (val_frames[clip] | test_frames[clip]), clip
