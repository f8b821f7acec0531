"""notebooks/quickstart.ipynb runs top to bottom."""

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient


@pytest.mark.slow
def test_quickstart_notebook_executes(task_env):
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("psnr" in o.get("text", "") for o in outputs)
