"""vfi.calibrate: the std scale of a checkpoint refitted on validation items, with a floor
outside the scale; the copy keeps every weight, and the pixels it was fitted on are covered as
the fit promises."""

import json

import pytest
import torch
from conftest import LPIPS_BACKBONE, run_task, task_error
from scipy.stats import spearmanr

from vfi.data.video import ClipsDataset
from vfi.models.checkpoint import model_from_checkpoint
from vfi.utils.checkpoint import RELEASE_CHECKPOINT, load_checkpoint

FLOOR = 0.0008  # about 0.1 of an 8-bit level on the [-1, 1] scale
ITEMS = 2  # the first two validation items (bigbuckbunny at 320x180)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibrate")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VFI_LOG_DIR", str(tmp / "logs"))
        if LPIPS_BACKBONE:
            patch.setenv("VFI_LPIPS_BACKBONE", LPIPS_BACKBONE)
        out = tmp / "out" / "calibrated.ckpt"
        args = [f"output={out}", f"std_floor={FLOOR}", "data=clips_val"]
        run_task("vfi.calibrate", [*args, f"trainer.limit_val_batches={ITEMS}"], tmp / "run")
    return out


def test_the_copy_keeps_the_weights_and_records_the_new_scale_and_floor(calibrated):
    old, new = load_checkpoint(RELEASE_CHECKPOINT), load_checkpoint(calibrated)
    assert new["state_dict"].keys() == old["state_dict"].keys()
    changed = [k for k, v in old["state_dict"].items() if not torch.equal(new["state_dict"][k], v)]
    assert changed == ["uncertainty_scale"]
    assert new["vfi_config"]["model"]["std_floor"] == FLOOR
    info = json.loads(calibrated.with_suffix(".json").read_text())
    assert info["calibration"]["data"] == "clips_val"
    scale = float(new["state_dict"]["uncertainty_scale"])
    assert info["calibration"]["scale"] == pytest.approx(scale)
    released = json.loads(RELEASE_CHECKPOINT.with_suffix(".json").read_text())
    assert info["source"] == released["source"]  # the training run, not the export
    assert "test/coverage2" not in info["metrics"]  # the old scale's
    # the release's own std terms and sampling options stay on record
    for key in ("std_terms", "sampling"):
        assert info["calibration"][key] == released["calibration"][key]
    model = model_from_checkpoint(calibrated)
    assert model.std_floor == FLOOR


def test_the_fitted_items_are_covered_at_95_percent(calibrated):
    """On the items it was fitted on (every pixel, not only the fit's random picks), the band
    +-1.96 sqrt(s^2 std^2 + b^2) holds about 95% of the errors, and the reported std is that
    formula applied to the release's own std (its reported one with its scale and floor taken
    out)."""
    release, model = model_from_checkpoint(RELEASE_CHECKPOINT), model_from_checkpoint(calibrated)
    s_old, s_new = float(release.uncertainty_scale), float(model.uncertainty_scale)
    data = ClipsDataset({"bigbuckbunny": 0.25}, step=2, frame_range=[0.6, 0.8], num_items=8)
    inside = []
    for k in range(ITEMS):
        item = data[k]
        i0, i1, gt = item["I0"][None], item["I1"][None], item["gt"][:, :]
        mean, std = model.interpolate(i0, i1, 0.5)
        mean_old, std_old = release.interpolate(i0, i1, 0.5)  # sqrt(s_old^2 std^2 + b_old^2)
        torch.testing.assert_close(mean, mean_old)
        own2 = (std_old**2 - release.std_floor**2) / s_old**2
        want = (s_new**2 * own2 + FLOOR**2).sqrt()
        torch.testing.assert_close(std, want, rtol=1e-4, atol=1e-6)
        inside.append(((mean - gt).abs() <= 1.959964 * std).float().flatten())
    assert 0.93 < float(torch.cat(inside).mean()) < 0.97


def test_calibrate_refuses_to_replace_an_output_and_a_negative_floor(calibrated, tmp_path, capsys):
    before = calibrated.read_bytes()
    line = task_error("vfi.calibrate", [f"output={calibrated}"], tmp_path, capsys)
    assert str(calibrated) in line and "overwrite=true" in line
    assert calibrated.read_bytes() == before
    line = task_error("vfi.calibrate", ["output=x.ckpt", "std_floor=-1"], tmp_path, capsys)
    assert "std_floor" in line and ">= 0" in line
    line = task_error("vfi.calibrate", ["output=x.ckpt", "std_power=0"], tmp_path, capsys)
    assert "std_power" in line and "positive" in line
    line = task_error("vfi.calibrate", [f"output={tmp_path}/a.pt"], tmp_path, capsys)
    assert "a.pt" in line and ".ckpt" in line


def test_a_floor_that_covers_alone_keeps_the_scale(tmp_path, task_env):
    """With b = 1 (half the [-1, 1] range) every error is within 1.96 b, so the fitted s is 0;
    the scale is kept, so the model's own std stays recoverable from the reported one."""
    out = tmp_path / "out.ckpt"
    args = [f"output={out}", "std_floor=1", "data=clips_val", "trainer.limit_val_batches=1"]
    run_task("vfi.calibrate", args, tmp_path / "run")
    old, new = load_checkpoint(RELEASE_CHECKPOINT), load_checkpoint(out)
    assert torch.equal(
        new["state_dict"]["uncertainty_scale"], old["state_dict"]["uncertainty_scale"]
    )
    assert new["vfi_config"]["model"]["std_floor"] == 1


def test_std_power_shapes_the_std_and_keeps_its_ranking(tmp_path, task_env):
    """std_power=p: the copy's reported std is sqrt(s^2 r^2 (std / r)^(2 p) + b^2) of the
    release's own std (its reported one with its scale, floor and power taken out; r one
    8-bit level), ranks the pixels as the release's does (Spearman 1, scipy), and its scale
    covers the fitted item at about 95%."""
    out, power = tmp_path / "shaped.ckpt", 1.6
    args = [f"output={out}", f"std_power={power}", "data=clips_val"]
    run_task("vfi.calibrate", [*args, "trainer.limit_val_batches=1"], tmp_path / "run")
    saved = load_checkpoint(out)
    assert saved["vfi_config"]["model"]["std_power"] == power
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["calibration"]["std_power"] == power
    model, release = model_from_checkpoint(saved), model_from_checkpoint(RELEASE_CHECKPOINT)
    assert model.std_power == power and release.std_power != power
    item = ClipsDataset({"bigbuckbunny": 0.25}, step=2, frame_range=[0.6, 0.8], num_items=8)[0]
    i0, i1, gt = item["I0"][None], item["I1"][None], item["gt"]
    mean, std = model.interpolate(i0, i1, 0.5)
    mean_old, std_old = release.interpolate(i0, i1, 0.5)
    torch.testing.assert_close(mean, mean_old)
    level, b = 2 / 255, release.std_floor
    shaped_old = (std_old.double() ** 2 - b**2).clamp(min=0).sqrt() / float(
        release.uncertainty_scale
    )
    own = level * (shaped_old / level) ** (1 / release.std_power)
    s = float(model.uncertainty_scale)
    want = (s**2 * (level * (own / level) ** power) ** 2 + b**2).sqrt()
    torch.testing.assert_close(std.double(), want, rtol=1e-4, atol=1e-7)
    rho = spearmanr(std.flatten().numpy(), std_old.flatten().numpy()).statistic
    assert rho == pytest.approx(1.0, abs=1e-6)
    assert 0.93 < float(((mean - gt).abs() <= 1.959964 * std).float().mean()) < 0.97


def test_a_two_view_copy_keeps_its_views_and_is_fitted_with_them(tmp_path, task_env):
    """motion_views=2: the release measured from the pair and its time reversal; the copy's
    config keeps the two views, its frames are the two-view release's, and its scale covers
    the fitted item's errors at about 95% with them."""
    out = tmp_path / "two.ckpt"
    args = [f"output={out}", "motion_views=2", "data=clips_val", "trainer.limit_val_batches=1"]
    run_task("vfi.calibrate", args, tmp_path / "run")
    saved = load_checkpoint(out)
    assert saved["vfi_config"]["model"]["flow_net"]["views"] == 2
    assert json.loads(out.with_suffix(".json").read_text())["calibration"]["motion_views"] == 2
    model = model_from_checkpoint(saved)
    assert model.flow_net.views == 2
    item = ClipsDataset({"bigbuckbunny": 0.25}, step=2, frame_range=[0.6, 0.8], num_items=8)[0]
    i0, i1, gt = item["I0"][None], item["I1"][None], item["gt"]
    mean, std = model.interpolate(i0, i1, 0.5)
    two = model_from_checkpoint(RELEASE_CHECKPOINT, motion_views=2)
    torch.testing.assert_close(mean, two.interpolate(i0, i1, 0.5)[0])
    one = model_from_checkpoint(RELEASE_CHECKPOINT).interpolate(i0, i1, 0.5)[0]
    assert (mean - one).abs().max() > 0.01  # the second view moved the frame
    assert 0.93 < float(((mean - gt).abs() <= 1.959964 * std).float().mean()) < 0.97


def test_std_terms_set_the_copys_motion_term_before_its_fit(tmp_path, task_env):
    """std_terms: the copy's config and record carry the given motion term (here the speed
    term e |v| of the releases before), its frames are the release's, its std differs from the
    release's, and the scale fitted with it covers the fitted item at about 95%; the old std's
    ranking metrics are dropped."""
    out = tmp_path / "speed.ckpt"
    terms = "std_terms={motion_error:0.2,motion_error_sigma:null}"
    run_task(
        "vfi.calibrate",
        [f"output={out}", terms, "data=clips_val", "trainer.limit_val_batches=1"],
        tmp_path / "run",
    )
    saved = load_checkpoint(out)
    assert saved["vfi_config"]["model"]["motion_error"] == 0.2
    assert saved["vfi_config"]["model"]["motion_error_sigma"] is None
    info = json.loads(out.with_suffix(".json").read_text())
    # the record keeps the release's own std terms, with these over them
    earlier = json.loads(RELEASE_CHECKPOINT.with_suffix(".json").read_text())["calibration"]
    assert earlier["std_terms"] == {"residual_error": 0.25}
    assert info["calibration"]["std_terms"] == {
        **earlier["std_terms"],
        "motion_error": 0.2,
        "motion_error_sigma": None,
    }
    assert "test/spearman" not in info["metrics"] and "test/ause" not in info["metrics"]
    model, release = model_from_checkpoint(saved), model_from_checkpoint(RELEASE_CHECKPOINT)
    assert model.motion_error == 0.2 and model.motion_error_sigma is None
    item = ClipsDataset({"bigbuckbunny": 0.25}, step=2, frame_range=[0.6, 0.8], num_items=8)[0]
    i0, i1, gt = item["I0"][None], item["I1"][None], item["gt"]
    mean, std = model.interpolate(i0, i1, 0.5)
    mean_release, std_release = release.interpolate(i0, i1, 0.5)
    torch.testing.assert_close(mean, mean_release)
    assert (std - std_release).abs().max() > 1e-3
    assert 0.93 < float(((mean - gt).abs() <= 1.959964 * std).float().mean()) < 0.97


def test_sampling_sets_the_copys_frames_and_scores_them_again(tmp_path, task_env):
    """sampling={dis_blend:0}: the copy's frames are the release's without DIS's second
    opinion, its scale is fitted on those frames, and its test metrics are measured again on
    the test split (here its first two items) instead of kept."""
    out = tmp_path / "plain.ckpt"
    args = [f"output={out}", "sampling={dis_blend:0.0}", "data=clips_val"]
    limits = ["trainer.limit_val_batches=1", "trainer.limit_test_batches=2"]
    run_task("vfi.calibrate", [*args, *limits], tmp_path / "run")
    saved = load_checkpoint(out)
    assert saved["vfi_config"]["model"]["dis_blend"] == 0.0
    info = json.loads(out.with_suffix(".json").read_text())
    release_info = json.loads(RELEASE_CHECKPOINT.with_suffix(".json").read_text())
    # the record keeps the release's own sampling options, with this one over them
    earlier = release_info["calibration"]["sampling"]
    assert earlier["dis_blend"] > 0
    assert info["calibration"]["sampling"] == {**earlier, "dis_blend": 0.0}
    assert info["metrics"]["test/psnr"] != release_info["metrics"]["test/psnr"]
    assert info["metrics"] == saved["metrics"] and info["metrics"]["test/psnr"] > 25
    model, release = model_from_checkpoint(saved), model_from_checkpoint(RELEASE_CHECKPOINT)
    item = ClipsDataset({"bigbuckbunny": 0.25}, step=2, frame_range=[0.6, 0.8], num_items=8)[0]
    i0, i1, gt = item["I0"][None], item["I1"][None], item["gt"]
    mean, std = model.interpolate(i0, i1, 0.5)
    with_dis = release.interpolate(i0, i1, 0.5)[0]
    release.dis_blend = 0.0
    torch.testing.assert_close(mean, release.interpolate(i0, i1, 0.5)[0])
    assert (mean - with_dis).abs().max() > 1e-3  # the release's second opinion moved it
    assert 0.93 < float(((mean - gt).abs() <= 1.959964 * std).float().mean()) < 0.97


@pytest.mark.parametrize(
    "terms, named",
    [
        ("std_terms={motion_error:-1}", "motion_error"),
        ("std_terms={floor:1}", "std_terms"),
        ("sampling={dis_blend:-0.5}", "dis_blend"),
        ("sampling={motion_error:1}", "sampling"),
    ],
)
def test_calibrate_refuses_bad_terms(terms, named, tmp_path, capsys):
    line = task_error("vfi.calibrate", [f"output={tmp_path}/x.ckpt", terms], tmp_path, capsys)
    assert named in line
    assert not (tmp_path / "x.ckpt").exists()
