"""Every config option composes and instantiates; Hydra plumbing is wired as documented."""

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from vfi.utils.run import group_options


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=["paths.output_dir=/tmp/unused", *overrides],
            return_hydra_config=hydra,
        )


@pytest.mark.parametrize("name", group_options("model"))
def test_every_model_instantiates(name):
    model = instantiate(_compose(f"model={name}").model)
    assert hasattr(model, "interpolate")


@pytest.mark.parametrize("name", [n for n in group_options("data") if n != "video"])
def test_every_data_option_instantiates(name):
    dm = instantiate(_compose(f"data={name}").data)
    assert dm.factories["val"] is not None and dm.factories["test"] is not None


@pytest.mark.parametrize("name", group_options("trainer"))
def test_every_trainer_option_composes(name):
    cfg = _compose(f"trainer={name}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


def test_gpu_experiment_is_larger():
    small = _compose().model.denoiser.base_channels
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
