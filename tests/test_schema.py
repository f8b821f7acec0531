"""Every config value a user sets is checked for its type and range before anything runs
(vfi.schema): a wrong value is one line naming the key, exit 2, nothing on stderr before it."""

import copy
import functools

import pytest
from conftest import one_line, run_cli, task_error
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vfi.errors import VFIError
from vfi.schema import SCHEMA, Spec, check_config
from vfi.utils.run import CONF_DIR

# compositions that between them hold every key of the schema
COMPOSITIONS = [
    ("train", []),
    ("train", ["model=resshift"]),
    ("train", ["model=autoencoder"]),
    ("train", ["model/flow_net=rife"]),
    ("eval", ["model=rife", "data=clips"]),
    ("interpolate", ["frames=[a,b]"]),
    ("calibrate", ["output=x.ckpt"]),
]


def composed(task: str, overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(task, overrides=["paths.output_dir=/tmp/unused", *overrides])


@functools.cache
def base(i: int):
    return composed(*COMPOSITIONS[i])


def holder(key: str) -> tuple[str, list[str]]:
    """The first composition that holds ``key``."""
    for i, composition in enumerate(COMPOSITIONS):
        if OmegaConf.select(base(i), key, default=KeyError) is not KeyError:
            return composition
    raise AssertionError(f"no composition holds {key}")


def wrong_values(spec: Spec) -> list[object]:
    """A value of the wrong type, and one out of range where the spec has a range."""
    if spec.choices is not None:
        return [12345, "nope"]
    if spec.kind is bool:
        return ["maybe", 0.5]
    out = ["abc"]
    if spec.low is not None:
        out.append(spec.low if spec.open_low else spec.low - 1)
    if spec.high is not None:
        out.append(spec.high + 1)
    return out


@pytest.mark.parametrize("key", list(SCHEMA))
def test_every_key_refuses_a_wrong_type_and_an_out_of_range_value(key):
    task, overrides = holder(key)
    check_config(base(COMPOSITIONS.index((task, overrides))))  # the preset's own value passes
    values = wrong_values(SCHEMA[key])
    assert len(values) >= 2
    for value in values:  # as Hydra parses an override key=value
        cfg = copy.deepcopy(base(COMPOSITIONS.index((task, overrides))))
        OmegaConf.update(cfg, key, value)
        with pytest.raises(VFIError) as refused:
            check_config(cfg)
        assert str(refused.value) == f"{key} must be {SCHEMA[key].expected()}, got {value!r}"


@pytest.mark.parametrize("group", ["experiment", "model", "trainer", "data"])
def test_every_preset_passes(group):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    assert len(options) >= 4
    for option in options:
        check_config(composed("train", [f"{group}={option}"]))


@pytest.mark.parametrize(
    "module,args,expected",
    [
        ("vfi.train", ["seed=abc"], "seed must be an integer from 0 to 4294967295, got 'abc'"),
        ("vfi.train", ["test=0.5"], "test must be true or false, got 0.5"),
        (
            "vfi.eval",
            ["data=clips", "num_samples=0"],
            "num_samples must be an integer >= 1 or null",
        ),
        ("vfi.interpolate", ["frames=[a,b]", "crf=60"], "crf must be an integer from 0 to 51"),
    ],
)
def test_a_wrong_value_ends_the_task_in_one_line(
    task_env, tmp_path, capsys, module, args, expected
):
    line = task_error(module, args, tmp_path / "run", capsys)
    assert line.startswith(f"{module}: error: {expected}"), line


def test_a_wrong_value_is_the_only_line_of_the_process(cli_env):
    """The real process: exit 2, and the line is all of stderr (no banner before it)."""
    proc = run_cli("vfi.train", "model.lr=-1", env=cli_env, check=False)
    assert proc.returncode == 2
    assert one_line(proc.stderr) == "vfi.train: error: model.lr must be positive, got -1"
