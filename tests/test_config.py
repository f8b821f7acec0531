"""Every config option composes and instantiates; Hydra plumbing is wired as documented."""

import os
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vfi.errors import VFIError
from vfi.utils.run import CONF_DIR, group_options


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=["paths.output_dir=/tmp/unused", *overrides],
            return_hydra_config=hydra,
        )


@pytest.mark.parametrize("name", group_options("model"))
def test_every_model_instantiates(name):
    """Every model option builds and interpolates a pair: frames of the input's shape, with
    I0 == I1 answered by that frame (up to the 8-bit rounding of ffmpeg's colour round trip).
    The untrained models answer their prior: ResShift (zero flows, v0 = v1 = 1/2, a zero
    denoiser output) the tau-weighted blend of any pair, std 0; the bridge, for I0 == I1, the
    frame plus its one noisy step, with std the floor alone (every hypothesis is the frame);
    the autoencoder (a zero output layer) the blend of its input frames."""
    model = instantiate(_compose(f"model={name}").model).eval()
    g = torch.Generator().manual_seed(0)
    frame, other = (torch.rand(1, 3, 32, 48, generator=g) * 2 - 1 for _ in range(2))
    if name == "autoencoder":  # rebuilds frames for the latent mode; interpolating is refused
        with pytest.raises(VFIError, match="does not interpolate"):
            model.interpolate(frame, frame, 0.5)
        with torch.no_grad():
            rebuilt = model.reconstruct(frame, other, -frame)
        torch.testing.assert_close(rebuilt, (other - frame) / 2, rtol=0, atol=1e-6)
        return
    if name == "resshift":
        with torch.no_grad():
            mean, std = model.interpolate(frame, other, 0.3)
        torch.testing.assert_close(mean, 0.7 * frame + 0.3 * other, rtol=0, atol=1e-5)
        assert mean.shape == std.shape and not std.any()
        return
    with torch.no_grad():
        mean, std = model.interpolate(frame, frame, 0.5)
    assert mean.shape == std.shape == frame.shape
    if name in ("blend", "classical", "ffmpeg"):
        assert (mean - frame).abs().max() < 4 / 127.5
    if name == "warp_posterior":
        torch.testing.assert_close(std, torch.full_like(std, model.uncertainty_floor))
        # on the T = 4 grid the estimate at 1/2 comes from x_{3/4} ~ N(frame, beta(3/4)):
        # frame + rho beta(1/2) / beta(3/4) (x - frame), of variance kappa^2 (1/2)^2 (1/4) / (3/4)
        noise = float((mean - frame).double().pow(2).mean())
        assert model.num_steps == 4
        assert abs(noise / (model.kappa**2 / 12) - 1) < 0.1, noise


@pytest.mark.parametrize("name", group_options("data"))
def test_every_data_option_instantiates(name):
    """Every option composes into a DataModule with train, val and test factories (the
    benchmarks with a placeholder ``root``: the factories read nothing until setup)."""
    needs_root = "root: ???" in (CONF_DIR / "data" / f"{name}.yaml").read_text()
    cfg = _compose(f"data={name}", *(["data.root=/placeholder"] if needs_root else []))
    dm = instantiate(cfg.data)
    assert all(dm.factories[split] is not None for split in ("train", "val", "test"))


@pytest.mark.parametrize("name", group_options("trainer"))
def test_every_trainer_option_composes(name):
    cfg = _compose(f"trainer={name}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("model,net", [("resshift", "denoiser"), ("warp_posterior", "refiner")])
def test_gpu_experiments_are_larger(model, net):
    def size(*overrides):
        built = instantiate(_compose(*overrides).model)
        return sum(p.numel() for p in getattr(built, net).parameters())

    cfg = _compose(f"experiment={model}_gpu")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert size(f"experiment={model}_gpu") > 10 * size(f"model={model}")
    assert all(list(part.get("size") or part.augment.crop) == [256, 256] for part in (
        cfg.data.train if model == "warp_posterior" else [cfg.data.train]
    ))  # fmt: skip


def test_joblib_launcher_option():
    cfg = _compose("hydra/launcher=joblib", hydra=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


@pytest.mark.parametrize("name", group_options("callbacks"))
def test_every_callbacks_option_instantiates(name):
    from lightning.pytorch.callbacks import EMAWeightAveraging

    cfg = _compose(f"callbacks={name}")
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    assert any(isinstance(c, EMAWeightAveraging) for c in callbacks) == (name == "ema")


def test_slurm_preset_becomes_the_expected_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm with trainer=ddp on 2 nodes of 4 GPUs: the submitit parameters
    (mapped as the launcher maps them) give an sbatch script with one task per GPU on each
    node and the requeue count. submitit wants an ``srun``: a stub on PATH stands in."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = _compose(
        "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer=ddp",
        "trainer.devices=4", "trainer.num_nodes=2", hydra=True,
    )  # fmt: skip
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher") and params["max_num_timeout"] == 3
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.strategy == "ddp"
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm", slurm_max_num_timeout=3)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"_target_", "submitit_folder", "max_num_timeout"}
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip}
    )
    script = executor._executor._make_submission_file_text("python -m vfi.train", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=240", "--cpus-per-task=8", "--mem=64GB"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, script


def test_optuna_presets_search_the_models_parameters():
    """hparams_search=<model> picks the model, the Optuna sweeper, a maximised val/psnr and
    parameters that exist in that model's config."""
    for name in group_options("hparams_search"):
        cfg = _compose(f"hparams_search={name}", hydra=True)
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
        assert cfg.optimized_metric == "val/psnr" and cfg.model._target_.split(".")[-2] == name
        for key in sweeper.params:
            assert OmegaConf.select(cfg, key) is not None, key


def _stub(folder, name: str, output: str = "") -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\nprintf '{output}'\n")
    (folder / name).chmod(0o755)


def test_launchers_that_cannot_start_get_one_line(tmp_path, monkeypatch, capsys):
    """Before Hydra launches: an unknown partition (the stub sinfo lists cpu and gpu), no
    sbatch on this machine, and a missing submitit each end with one line, exit 2."""
    from vfi.utils.run import check_command_line

    def refusal(*args) -> str:
        with pytest.raises(SystemExit) as stop:
            check_command_line(["-m", *args, "trainer=debug"], "train", "vfi.train")
        assert stop.value.code == 2
        (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        return line

    bin_dir = tmp_path / "bin"
    _stub(bin_dir, "sinfo", "gpu\\ncpu\\ngpu\\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert "needs SLURM's sbatch" in refusal("hydra/launcher=slurm")
    _stub(bin_dir, "sbatch")
    line = refusal("hydra/launcher=slurm", "hydra.launcher.partition=gpux")
    assert line.endswith("unknown SLURM partition 'gpux' (sinfo lists: cpu, gpu)"), line
    check_command_line(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"], "train", "x")
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now fails
    assert "needs submitit" in refusal("hydra/launcher=local")
