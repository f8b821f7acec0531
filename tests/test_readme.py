"""Every `python -m vfi.<task> ...` command of the README and docs/*.md composes: its config
groups and options exist and Hydra accepts its overrides (placeholders such as `...` and
`<run>` filled, sweeps at their first value). The commands that train, score and interpolate
also run end to end in test_cli.py and test_interpolate.py."""

import re
import shlex

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from vfi.utils.run import CONF_DIR, check_group_choices

CONFIGS = {"vfi.train": "train", "vfi.eval": "eval", "vfi.interpolate": "interpolate"}
CONFIGS.update({"vfi.data.bench": "data_bench", "vfi.data.convert": "convert"})


DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_commands() -> list[tuple[str, list[str]]]:
    """(module, arguments) of each Hydra entry-point command in the README and docs/*.md, in
    code blocks (backslash continuations joined, comments dropped) and in inline code, split
    as a shell splits them (quotes removed)."""
    text = "\n".join(p.read_text() for p in DOCUMENTS).replace("\\\n", " ")
    found = []
    for match in re.finditer(r"python -m (vfi(?:\.\w+)+)([^`\n#]*)", text):
        module, rest = match.group(1), match.group(2)
        if module in CONFIGS:
            found.append((module, [fill(arg) for arg in shlex.split(rest) if fill(arg)]))
    return found


def fill(arg: str) -> str:
    """An argument with the README's placeholders filled: `[key=value]` (optional) is
    key=value, `...` and `<name>` become plain words (data=atd12k for a data placeholder),
    `[overrides]` and `...` alone vanish."""
    if arg in ("[overrides]", "...") or arg.startswith("("):
        return ""
    if arg.startswith("[") and arg.endswith("]") and "=" in arg:
        arg = arg[1:-1]
    arg = re.sub(r"<\w+>", "x", arg).replace("...", "x")
    return "data=atd12k" if arg == "data=x" else arg  # "any data=": one with a root


def first_of_sweeps(args: list[str]) -> list[str]:
    """A multirun's overrides with every sweep at its first value."""
    out = []
    for arg, override in zip(args, OverridesParser.create().parse_overrides(args), strict=True):
        if override.is_sweep_override():
            arg = f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
        out.append(arg)
    return out


COMMANDS = readme_commands()


def test_the_readme_has_its_commands():
    modules = {module for module, _ in COMMANDS}
    assert len(COMMANDS) >= 25 and modules == set(CONFIGS), COMMANDS


@pytest.mark.parametrize("module,args", COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_readme_command_composes(module, args):
    args = first_of_sweeps([a for a in args if a != "-m"])
    check_group_choices(args, module)  # exits on an unknown option
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(CONFIGS[module], overrides=args, return_hydra_config=True)
    assert cfg.task_name


def test_every_test_the_guarantees_name_exists():
    """docs/guarantees.md names the test behind each promise: each is a test function of that
    file (module-level or a ``::`` path within it)."""
    text = (REPO / "docs" / "guarantees.md").read_text()
    named = re.findall(r"`(tests/\w+\.py)::(\w+)`|`::(\w+)`", text)
    assert len(named) >= 15
    current = None
    for path, name, sibling in named:
        current = path or current
        source = (REPO / current).read_text()
        assert re.search(rf"^def {name or sibling}\(", source, re.M), (current, name or sibling)


def test_the_readme_is_one_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_between_the_documents_resolves():
    """Relative links (and their #anchors) in the README and docs/*.md name an existing file and
    one of its headings."""
    checked = 0
    for doc in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            assert file.exists(), (doc.name, target)
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), re.M)
                assert anchor in {slug(h) for h in headings}, (doc.name, target)
            checked += 1
    assert checked >= 15
