"""The result tables of README.md and docs/*.md equal the committed `vfi.eval` runs they are
generated from (docs/tables.py, docs/results/*.json)."""

import importlib.util
import json
import re
import subprocess
import sys

from conftest import REPO

spec = importlib.util.spec_from_file_location("tables", REPO / "docs" / "tables.py")
tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tables)


def test_every_table_equals_its_json():
    done = subprocess.run(
        [sys.executable, str(REPO / "docs" / "tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    blocks = [m for p in tables.documents() for m in tables.BLOCK.finditer(p.read_text())]
    assert {m.group(2) for m in blocks} == set(tables.TABLES)  # every table is shown somewhere


def test_a_changed_number_is_rebuilt_from_the_json():
    text = (REPO / "docs" / "results.md").read_text()
    bump = lambda m: m.group(0)[:-1] + str((int(m.group(0)[-1]) + 1) % 10)  # noqa: E731
    changed = re.sub(r"\| all 24 items \| (\*\*)?\d", bump, text, count=1)
    assert changed != text and tables.render(changed) == text


def test_the_release_cell_is_the_runs_mean():
    """The first row of the README's table against the JSON's record, read independently."""
    run = json.loads((REPO / "docs" / "results" / "clips.json").read_text())
    record = next(r for r in run["results"] if r["data"] == "clips" and "release" in r["model"])
    row = next(l for l in (REPO / "README.md").read_text().splitlines() if l.startswith("| all "))
    cell = row.split("|")[2].replace("*", "").split("/")
    assert float(cell[0]) == round(record["metrics"]["test/psnr"], 2)
    assert float(cell[1]) == round(record["metrics"]["test/lpips"], 4)
    assert run["command"].startswith("python -m vfi.eval") and len(run["commit"]) == 40
