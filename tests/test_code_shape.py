"""The shape of the code: no function takes more than 8 parameters, except the constructors
that Hydra configures (a class named by a ``_target_`` in vfi/conf), which take one per key."""

import ast
import re

from conftest import REPO

MAX_PARAMETERS = 8


def hydra_targets() -> set[str]:
    """The class names that a config instantiates."""
    names = set()
    for path in (REPO / "vfi" / "conf").rglob("*.yaml"):
        names |= {
            t.rsplit(".", 1)[-1] for t in re.findall(r"_target_:\s*([\w.]+)", path.read_text())
        }
    return names


def parameter_counts(tree: ast.Module):
    """(qualified name, number of parameters without self / cls, class name or None) of every
    function in a module."""

    def visit(node, owner):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, child.name)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                a = child.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                if owner and names and names[0] in ("self", "cls"):
                    names = names[1:]
                count = len(names) + (a.vararg is not None)
                yield f"{owner}.{child.name}" if owner else child.name, count, owner
                yield from visit(child, None)

    yield from visit(tree, None)


def test_no_function_takes_more_than_eight_parameters():
    targets = hydra_targets()
    assert {"WarpPosteriorVFI", "VFIDataModule"} <= targets
    long = []
    for path in sorted((REPO / "vfi").rglob("*.py")):
        for name, count, owner in parameter_counts(ast.parse(path.read_text())):
            configured = name.endswith(".__init__") and owner in targets
            if count > MAX_PARAMETERS and not configured:
                long.append(f"{path.relative_to(REPO)}:{name} ({count})")
    assert not long, long


def test_the_count_sees_a_long_signature():
    tree = ast.parse("class A:\n    def f(self, a, b, c, d, e, f, g, h, i, *rest): pass\n")
    assert list(parameter_counts(tree)) == [("A.f", 10, "A")]
