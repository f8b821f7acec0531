"""vfi.eval's rows per motion bin: items split by ``motion_px`` (the 95th percentile of the DIS
flow magnitude I0 -> I1) as SNU-FILM's easy / medium / hard / extreme."""

import json

import numpy as np
import pytest
import torch
from conftest import run_task, task_error
from omegaconf import OmegaConf

from vfi.errors import VFIError
from vfi.eval import group_records, motion_groups, motion_thresholds
from vfi.metrics import motion_magnitude
from vfi.models.baselines import BlendInterpolator
from vfi.ops.dis import DISFlow

SNU = [4.0, 12.0, 32.0]


def test_motion_magnitude_is_numpys_percentile_of_the_flow_norm():
    flow = torch.randn(3, 2, 17, 23, generator=torch.Generator().manual_seed(0)) * 5
    flow[1] = 0
    norm = np.linalg.norm(flow.numpy().astype(np.float64), axis=1).reshape(3, -1)
    for q in (0.0, 0.5, 0.95, 1.0):
        expected = np.percentile(norm, 100 * q, axis=1)
        assert motion_magnitude(flow, q).numpy() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # a 10 x 10 flow of magnitudes 0, 1, ..., 99 (3-4-5 vectors): the 95th percentile, 94.05
    steps = torch.arange(100.0).view(1, 10, 10)
    flow = torch.cat([0.6 * steps, 0.8 * steps])[None]
    assert motion_magnitude(flow).tolist() == pytest.approx([94.05], rel=1e-5)


def scored(*motions: float) -> list[dict]:
    """Per-item rows of clip c with these motion_px."""
    return [{"index": i, "id": f"c/{i}", "motion_px": m} for i, m in enumerate(motions)]


def test_motion_groups_split_at_the_thresholds_into_the_upper_bin():
    groups = motion_groups(scored(0.0, 3.99, 4.0, 11.9, 12.0, 31.99, 32.0, 500.0), SNU)
    assert {label: [r["motion_px"] for r in g] for label, g in groups.items()} == {
        "motion easy <4 px": [0.0, 3.99],
        "motion medium 4-12 px": [4.0, 11.9],
        "motion hard 12-32 px": [12.0, 31.99],
        "motion extreme >=32 px": [32.0, 500.0],
    }
    assert list(motion_groups(scored(40.0, 1.0), SNU)) == [  # in bin order; empty bins absent
        "motion easy <4 px",
        "motion extreme >=32 px",
    ]
    other = motion_groups(scored(2.0, 2.5, 7.0), [2.5, 7.5])  # not 3 thresholds: numbered
    assert {k: len(g) for k, g in other.items()} == {"motion0 <2.5 px": 1, "motion1 2.5-7.5 px": 2}


def test_rows_without_motion_and_no_thresholds_make_no_bins():
    old = [{"index": 0, "psnr": 30.0}]  # a row from an eval before motion_px (resume)
    assert motion_groups(old + scored(5.0), SNU) == {"motion medium 4-12 px": scored(5.0)}
    assert motion_groups(scored(5.0), []) == {}
    assert group_records("blend", "clips", scored(5.0), [], per_clip=False) == []


def test_group_records_per_bin_and_per_clip_and_bin():
    items = [{**r, "psnr": 30.0 + i} for i, r in enumerate(scored(1.0, 20.0, 2.0))]
    items[2]["id"] = "d/2"
    records = group_records("blend", "clips", items, SNU, per_clip=True)
    assert [(r["data"], r["items"], r["metrics"]["test/psnr"]) for r in records] == [
        ("clips [motion easy <4 px]", 2, 31.0),
        ("clips [motion hard 12-32 px]", 1, 31.0),
        ("clips [c]", 2, 30.5),
        ("clips [c, motion easy <4 px]", 1, 30.0),
        ("clips [c, motion hard 12-32 px]", 1, 31.0),
        ("clips [d]", 1, 32.0),
        ("clips [d, motion easy <4 px]", 1, 32.0),
    ]
    assert {r["model"] for r in records} == {"blend"}


@pytest.mark.parametrize("value", [None, [], OmegaConf.create({"v": []}).v])
def test_null_or_empty_motion_bins_switch_the_rows_off(value):
    assert motion_thresholds(value) == []


@pytest.mark.parametrize("value", [[12, 4], [4, 4], [0, 4], [-1], "4", 4, [4, "x"], [True]])
def test_bad_motion_bins_are_refused(value):
    with pytest.raises(VFIError, match="motion_bins must be increasing positive thresholds"):
        motion_thresholds(value)


def test_motion_px_comes_from_the_inputs_only():
    """One DIS call I0 -> I1 per item: the same motion_px whatever the model's output."""
    model = BlendInterpolator()
    model._cache["net"] = None  # no LPIPS: not needed here
    i0 = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    i1 = torch.roll(i0, shifts=(3, -5), dims=(2, 3))  # a 3 x 5 px shift, 5.83 px
    batch = {"I0": i0, "I1": i1, "gt": ((i0 + i1) / 2)[:, None], "taus": torch.full((2, 1), 0.5)}
    scores = [model._score(batch, [(out, torch.zeros_like(out))], [0.5], 1)[0] for out in (i0, -i1)]
    assert torch.equal(scores[0]["motion_px"], scores[1]["motion_px"])
    expected = motion_magnitude(DISFlow("medium")(i0, i1))
    assert torch.equal(scores[0]["motion_px"], expected) and expected.shape == (2,)


def expected_bins(rows: list[dict]) -> dict:
    """{data label: (item count, mean PSNR)} of the motion bins and clip bins of the default
    thresholds, from the rows' motion_px."""
    labels = ["motion easy <4 px", "motion medium 4-12 px", "motion hard 12-32 px",
              "motion extreme >=32 px"]  # fmt: skip
    bins: dict[str, list[float]] = {}
    for row in rows:
        label = labels[sum(t <= row["motion_px"] for t in SNU)]
        clip = row["id"].split("/")[0]
        for data in (f"clips [{label}]", f"clips [{clip}, {label}]"):
            bins.setdefault(data, []).append(row["psnr"])
    return {data: (len(v), pytest.approx(sum(v) / len(v))) for data, v in bins.items()}


def test_eval_reports_rows_per_motion_bin(task_env, tmp_path):
    """Two items per clip with per_clip=true: after the row per model and the rows per motion
    bin, a row per clip and per clip and bin, only for non-empty bins, each with its item
    count and the mean of its items' rows."""
    args = ["model=blend", "data=clips", "data.test.num_items=2", "per_clip=true"]
    ev = tmp_path / "run"
    run_task("vfi.eval", args, ev)
    (log,) = (ev / "items").glob("*.jsonl")
    rows = [json.loads(line) for line in log.open()]
    results = json.loads((ev / "metrics.json").read_text())["results"]
    assert len(rows) == 6 and (results[0]["data"], results[0]["items"]) == ("clips", 6)
    binned = {r["data"]: (r["items"], r["metrics"]["test/psnr"]) for r in results[1:]
              if "motion" in r["data"]}  # fmt: skip
    assert binned == expected_bins(rows)
    assert len([d for d in binned if "," not in d]) >= 2  # the items span several bins
    assert [r["data"] for r in results if "motion" not in r["data"]] == [
        "clips", "clips [bigbuckbunny]", "clips [bikes]", "clips [carphone_pristine]"
    ]  # fmt: skip
    assert "| blend | clips [motion easy <4 px] |" in (ev / "results.md").read_text()
    assert "paired" not in json.loads((ev / "metrics.json").read_text())  # no baseline


def test_decreasing_motion_bins_are_one_line(task_env, tmp_path, capsys):
    args = ["model=blend", "data=clips", "motion_bins=[12,4]"]
    line = task_error("vfi.eval", args, tmp_path / "run", capsys)
    assert line == (
        "vfi.eval: error: motion_bins must be increasing positive thresholds in pixels, "
        "e.g. [4,12,32] (or null for no motion rows), got [12, 4]"
    )


def test_eval_compares_the_model_with_each_baseline_item_by_item(task_env, tmp_path):
    """A model scored with a baseline: per group (all items, each clip, ...) the mean of the
    per-item differences of the two JSONL files, its 95% t interval (numpy, the t table) and
    the items won, in metrics.json and as a table in results.md."""
    from test_metrics import t_interval

    args = ["model=blend", "baselines=[classical]", "data=clips", "data.test.num_items=3"]
    ev = tmp_path / "run"
    run_task("vfi.eval", [*args, "per_clip=true"], ev)
    rows = {}
    for log in (ev / "items").glob("*.jsonl"):
        rows[log.name.split("__")[0]] = {r["index"]: r for r in map(json.loads, log.open())}
    paired = json.loads((ev / "metrics.json").read_text())["paired"]
    assert {p["baseline"] for p in paired} == {"classical"}
    by_data = {p["data"]: p for p in paired}
    for data, clip in (
        ("clips", ""),
        ("clips [bikes]", "bikes/"),
        ("clips [carphone_pristine]", "carphone"),
    ):
        ours = [r for r in rows["blend"].values() if r["id"].startswith(clip)]
        for name, better in (("psnr", 1), ("lpips", -1)):
            diff = [r[name] - rows["classical"][r["index"]][name] for r in ours]
            got = by_data[data][name]
            assert got["n"] == by_data[data]["items"] == len(diff) == (9 if not clip else 3)
            assert got["mean"] == pytest.approx(np.mean(diff), abs=1e-9)
            assert (got["low"], got["high"]) == pytest.approx(t_interval(diff), rel=1e-6)
            assert got["won"] == sum(better * d > 0 for d in diff)
    table = (ev / "results.md").read_text()
    assert "| model - baseline | data | items | PSNR dB | SSIM | LPIPS |" in table
    assert "| blend - classical | clips | 9 | " in table
