"""The package's layers point down only, and its modules import one another in no circle.

Every module under ``vfi/`` is parsed with ``ast`` (nothing of vfi is imported), and every
import statement in it counts: module-level ones and the lazy ones inside functions (and
under ``if TYPE_CHECKING:``), ``import vfi.x``, ``from vfi.x import y`` and the relative
``from . import y`` / ``from .x import y`` forms. A module may import from its own layer and
the ones below it. The layers, bottom to top:

0. ``vfi`` (the package itself) and ``vfi.errors``: the one error type, raised everywhere;
1. ``vfi.ops``: warping, splatting, DIS flow, scene cuts, 8-bit quantisation (plain torch);
2. ``vfi.diffusion``: schedules, posteriors, samplers (maths; may use ops, never the reverse);
3. ``vfi.nets``: the networks;
4. ``vfi.metrics``, ``vfi.utils`` and ``vfi.schema``: metrics and run plumbing (checkpoint
   files, panels, reports, config helpers, config value checks); never data or models;
5. ``vfi.data``: datasets and the DataModule;
6. ``vfi.models`` (the LightningModules, and a model rebuilt from a checkpoint) and
   ``vfi.callbacks`` (their Lightning callbacks);
7. the entry points, which may import anything: ``vfi.train``, ``vfi.eval``,
   ``vfi.calibrate``, ``vfi.interpolate``, ``vfi.bench``, ``vfi.data.bench``,
   ``vfi.data.convert``.

A new module must be given a layer here (the first test fails until it is).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vfi"

ENTRY_POINTS = ("vfi.train", "vfi.eval", "vfi.calibrate", "vfi.interpolate", "vfi.bench")
ENTRY_POINTS += ("vfi.data.bench", "vfi.data.convert")
LAYERS = {  # module or package -> layer; the longest matching name wins
    "vfi": 0,
    "vfi.errors": 0,
    "vfi.ops": 1,
    "vfi.diffusion": 2,
    "vfi.nets": 3,
    "vfi.metrics": 4,
    "vfi.utils": 4,
    "vfi.schema": 4,
    "vfi.data": 5,
    "vfi.models": 6,
    "vfi.callbacks": 6,
    **dict.fromkeys(ENTRY_POINTS, 7),
}


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def layer(module: str) -> int | None:
    """The layer of a module: that of the longest name in LAYERS it is or lies under (the
    package root ``vfi`` covers itself only)."""
    names = [n for n in LAYERS if module == n or n != "vfi" and module.startswith(n + ".")]
    return LAYERS[max(names, key=len)] if names else None


class _Imports(ast.NodeVisitor):
    """The vfi modules that a module's source imports: (target, line, enclosing function)."""

    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known, self.functions, self.found = known, [], []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _add(self, name: str, node: ast.stmt) -> None:
        while name and name not in self.known:  # import a.b.c names module a.b.c, or a.b ...
            name = name.rpartition(".")[0]
        if name:
            where = self.functions[-1] if self.functions else None
            self.found.append((name, node.lineno, where))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parent = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{parent}.{base}" if base else parent
        for alias in node.names:  # from pkg import submodule names the submodule itself
            name = f"{base}.{alias.name}"
            self._add(name if name in self.known else base, node)


def imports(module: str, source: str, is_package: bool, known: set[str]) -> list:
    visitor = _Imports(module, is_package, known)
    visitor.visit(ast.parse(source))
    return visitor.found


@pytest.fixture(scope="module")
def graph() -> dict[str, list]:
    """Each module's imports of other vfi modules: (target, line, function or None)."""
    files = module_files()
    known = set(files)
    return {
        module: [
            found
            for found in imports(module, path.read_text(), path.name == "__init__.py", known)
            if found[0] != module
        ]
        for module, path in files.items()
    }


def _where(module: str, line: int, function: str | None) -> str:
    path = module_files()[module].relative_to(PACKAGE.parent)
    return f"{path}:{line}" + (f" (inside {function}())" if function else "")


def test_the_parser_sees_lazy_relative_and_submodule_imports():
    known = {"vfi", "vfi.a", "vfi.a.b", "vfi.a.c", "vfi.d"}
    source = (
        "import os\nimport vfi.a.b as b\nfrom . import c\nfrom .. import d\n"
        "from vfi.a import helper\n"
        "def f():\n    from .c import thing\n    import vfi\n"
    )
    assert imports("vfi.a.x", source, False, known | {"vfi.a.x"}) == [
        ("vfi.a.b", 2, None),
        ("vfi.a.c", 3, None),
        ("vfi.d", 4, None),
        ("vfi.a", 5, None),
        ("vfi.a.c", 7, "f"),
        ("vfi", 8, "f"),
    ]
    assert imports("vfi.a", "from . import c\nfrom .b import y\n", True, known) == [
        ("vfi.a.c", 1, None),
        ("vfi.a.b", 2, None),
    ]


def test_every_module_has_a_layer(graph):
    assert len(graph) > 40 and "vfi.utils.run" in graph and "vfi.ops.warp" in graph
    assert [m for m in graph if layer(m) is None] == []


def test_no_import_runs_up_a_layer(graph):
    upward = [
        f"{_where(module, line, function)}: {module} (layer {layer(module)}) imports "
        f"{target} (layer {layer(target)})"
        for module, found in graph.items()
        for target, line, function in found
        if None not in (layer(module), layer(target)) and layer(target) > layer(module)
    ]
    assert upward == [], "imports that run up a layer:\n" + "\n".join(upward)


def test_no_import_cycle(graph):
    """Depth-first search over the import graph, lazy imports included: an edge back to a
    module still on the path closes a circle."""
    done, path, circles = set(), [], []

    def visit(module: str) -> None:
        path.append(module)
        for target, line, function in graph[module]:
            if target in path:
                circle = path[path.index(target) :] + [target]
                circles.append(" -> ".join(circle) + f"  [{_where(module, line, function)}]")
            elif target not in done:
                visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
    assert circles == [], "import cycles:\n" + "\n".join(circles)
