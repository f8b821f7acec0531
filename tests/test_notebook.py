"""notebooks/quickstart.ipynb runs top to bottom, and is committed with its outputs (small,
with no machine path in them) so a reader sees the frames, the panel and the scores."""

import re

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|root|tmp|home|Users)/")


def code(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def outputs(nb) -> list[dict]:
    return [o for cell in code(nb) for o in cell.outputs]


def output_text(output: dict) -> str:
    """The text of a stream or error output and the text parts of a display / result."""
    data = output.get("data", {})
    parts = [output.get("text", ""), *output.get("traceback", [])]
    parts += [v if isinstance(v, str) else "".join(v) for k, v in data.items() if "text" in k]
    return "".join(parts)


def test_committed_notebook_has_small_clean_outputs():
    assert NOTEBOOK.stat().st_size < 1_000_000, "keep the committed notebook under 1 MB"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = code(nb)
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), (
        "committed after one run top to bottom"
    )
    found = outputs(nb)
    assert not [o for o in found if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in found), "the panel figure"
    assert any("psnr" in o.get("text", "") for o in found), "the printed scores"
    assert any("| PSNR (dB) |" in o.get("data", {}).get("text/markdown", "") for o in found)
    assert not [t for o in found if MACHINE_PATH.search(t := output_text(o))], (
        "an output holds a machine path"
    )
    assert not [c for c in cells if "execution" in c.metadata], "no execution timings"


@pytest.mark.slow
def test_quickstart_notebook_executes(task_env):
    committed = nbformat.read(NOTEBOOK, as_version=4)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    ).execute()
    found = outputs(nb)
    assert not [o for o in found if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in found)
    assert any("psnr" in o.get("text", "") for o in found)
    assert not [t for o in found if MACHINE_PATH.search(t := output_text(o))]

    def images(notebook):  # which cells draw a picture
        return [any("image/png" in o.get("data", {}) for o in c.outputs) for c in code(notebook)]

    assert images(nb) == images(committed), "the committed outputs are from this source"
