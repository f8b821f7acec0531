"""One source for every default: each key a model preset (vfi/conf/model/*.yaml) sets is a
parameter of its class (or of a base class), and where the constructor has a default, it
equals the preset's value; so a model built in Python is the model the config trains."""

import importlib
import inspect

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vfi.utils.run import CONF_DIR

PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def constructor_defaults(cls: type) -> dict[str, object]:
    """Every keyword parameter of ``cls`` and its bases: the nearest class's default (or
    ``inspect.Parameter.empty``)."""
    found = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():
            if param.kind == param.KEYWORD_ONLY or param.kind == param.POSITIONAL_OR_KEYWORD:
                found.setdefault(name, param.default)
    return found


def preset(name: str) -> dict:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", "paths.output_dir=/tmp/unused"])
    return OmegaConf.to_container(cfg.model, resolve=False)


@pytest.mark.parametrize("name", PRESETS)
def test_the_constructor_defaults_are_the_preset(name):
    node = preset(name)
    module, _, attr = node["_target_"].rpartition(".")
    defaults = constructor_defaults(getattr(importlib.import_module(module), attr))
    differ = []
    for key, value in node.items():
        if key.startswith("_"):
            continue
        assert key in defaults, f"model/{name}.yaml sets {key}, which no constructor takes"
        default = defaults[key]
        configured = isinstance(value, dict) or (isinstance(value, str) and "${" in value)
        if default is inspect.Parameter.empty or configured:
            continue
        if isinstance(default, tuple):
            default = list(default)
        if default != value:
            differ.append(f"{key}: constructor {default!r}, yaml {value!r}")
    assert not differ, differ


def test_the_check_sees_a_changed_default():
    class Base:
        def __init__(self, lr: float = 1.0, **kwargs):
            pass

    class Model(Base):
        def __init__(self, kappa: float = 0.1, lr: float = 2.0, **kwargs):
            super().__init__(lr=lr, **kwargs)

    assert constructor_defaults(Model) == {"self": inspect.Parameter.empty, "kappa": 0.1, "lr": 2.0}


@pytest.mark.parametrize("name", ["warp_posterior", "resshift", "autoencoder"])
def test_the_saved_hyperparameters_are_the_config_and_rebuild_the_model(name, tmp_path):
    """A model built from its preset records its config with save_hyperparameters (nothing
    set from outside): every key of the resolved preset is in the checkpoint's model config
    with the same value, and that config rebuilds a model with the same weights' names and
    shapes."""
    from hydra.utils import instantiate

    from vfi.callbacks import model_config

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", f"paths.output_dir={tmp_path}"])
    resolved = OmegaConf.to_container(cfg.model, resolve=True)
    model = instantiate(cfg.model)
    saved = model_config(model)
    assert {k: saved.get(k) for k in resolved} == resolved
    assert "run_config" not in vars(model)
    rebuilt = instantiate(saved)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert model_config(rebuilt) == saved
