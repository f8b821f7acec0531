"""Every config option composes and instantiates; Hydra plumbing is wired as documented."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

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
    I0 == I1 answered by that frame (up to the 8-bit rounding of ffmpeg's colour round trip)."""
    model = instantiate(_compose(f"model={name}").model).eval()
    frame = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        mean, std = model.interpolate(frame, frame, 0.5)
    assert mean.shape == std.shape == frame.shape
    if name in ("blend", "classical", "ffmpeg"):
        assert (mean - frame).abs().max() < 4 / 127.5


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


def test_gpu_experiment_is_larger():
    small = _compose("model=resshift").model.denoiser.base_channels
    cfg = _compose("experiment=resshift_gpu")
    assert cfg.model.denoiser.base_channels > small and cfg.trainer.accelerator == "gpu"


def test_joblib_launcher_option():
    cfg = _compose("hydra/launcher=joblib", hydra=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")


@pytest.mark.parametrize("name", group_options("callbacks"))
def test_every_callbacks_option_instantiates(name):
    from lightning.pytorch.callbacks import EMAWeightAveraging

    cfg = _compose(f"callbacks={name}")
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    assert any(isinstance(c, EMAWeightAveraging) for c in callbacks) == (name == "ema")
