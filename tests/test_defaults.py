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
