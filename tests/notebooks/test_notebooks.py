"""The notebooks run top to bottom (nbclient), at small scale and pointed at existing tables and checkpoints.

Each notebook has one parameter cell (tagged ``parameters``); like papermill, the tests insert a cell
right after it that sets new values (at least ``OUT_DIR``, a temporary folder), and run the kernel in
a temporary working directory so that nothing is written into the checkout. The small-scale runs are
module fixtures: the full-scale tests reuse the tables and checkpoints they made instead of training
again.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import numpy as np
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = ("figure3.ipynb", "figure4.ipynb")
#: seconds per cell; the small grid cell is the longest (about a minute on 2 idle cores)
CELL_TIMEOUT = 480
POSITIONS = [[0.0, 0.0], [0.0, 0.5], [0.5, 0.0], [0.5, 0.5]]


def _parameter_cell(nb: Any) -> int:
    tagged = [k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def execute(name: str, out_dir: Path, **params: Any) -> Any:
    """Run notebook ``name`` with ``OUT_DIR=out_dir`` and ``params`` injected; return the executed notebook.

    The executed copy is saved as ``out_dir/<name>`` for inspection when a test fails.
    """
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    values = {"OUT_DIR": str(out_dir), **params}
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameter_cell(nb) + 1, cell)
    workdir = out_dir.parent / f"{out_dir.name}_cwd"
    workdir.mkdir(parents=True, exist_ok=True)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    # One thread per kernel, like the rest of the suite (conftest.py): on shared cores, spinning
    # OpenMP threads make the tiny trainings many times slower, not faster.
    try:
        client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert list(workdir.iterdir()) == [], "the notebook wrote outside OUT_DIR"
    return nb


def _pngs_shown(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def figure3_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("nb") / "figure3"
    return out, execute("figure3.ipynb", out)


@pytest.fixture(scope="module")
def figure4_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("nb") / "figure4"
    return out, execute("figure4.ipynb", out)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [k for k, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert _parameter_cell(nb) == code[0], "the parameter cell must be the first code cell"
    for k in code:
        cell = nb.cells[k]
        assert cell.outputs == [] and cell.execution_count is None, f"{name} cell {k} holds outputs"
    src = nb.cells[code[0]].source
    assert "OUT_DIR = " in src


def test_figure3_small_scale(figure3_small: tuple[Path, Any]) -> None:
    out, nb = figure3_small
    for f in ("figure3a.png", "figure5.png", "figure3a.csv", "figure3b.png", "figure3b.csv", "figure3b.json",
              "figure3b_checkpoints.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert _pngs_shown(nb) == 3  # panel A, Figure 5's view, panel B

    table = _csv(out / "grid" / "results.csv")
    cells = {(r["method"], r["backbone"], float(r["c_min"])) for r in table}
    backbones = ("rf_resnet50_rf43", "rf_resnet50_rf155", "resnet50")
    assert cells == {*(("co_byol", b, c) for b in backbones for c in (0.2, 0.7)),
                     ("byol", "resnet50", 0.2), ("byol", "resnet50", 0.7)}
    rf = {r["backbone"]: int(r["rf"]) for r in table}
    assert rf["rf_resnet50_rf43"] < rf["rf_resnet50_rf155"] < rf["resnet50"]
    assert all(0 <= float(r["linear_top1"]) <= 100 for r in table)

    points = _csv(out / "figure3a.csv")
    assert len(points) == 8 and {p["role"] for p in points} == {"grid", "reference"}
    summaries = json.loads((out / "figure3b.json").read_text())
    assert set(summaries) == {"BYOL", "CO-BYOL"}
    for s in summaries.values():
        assert math.isfinite(s["pearson_c"]) and s["num_pairs"] == 64 * 63 // 2


def test_figure3_full_scale_inputs(figure3_small: tuple[Path, Any], tmp_path: Path) -> None:
    """Pointed at a results table and checkpoints, the notebook trains nothing and uses what it is given."""
    small, _ = figure3_small
    grid_dir = small / "grid"
    co = grid_dir / "co_byol_rf_resnet50_rf43_cmin0.7" / "checkpoint.pt"
    byol = grid_dir / "byol_resnet50_cmin0.7"  # a run folder is accepted too
    out = tmp_path / "figure3"
    execute("figure3.ipynb", out, RESULTS_CSV=str(grid_dir / "results.csv"), CO_CKPT=str(co), BYOL_CKPT=str(byol),
            N_IMAGES=16, METRIC="knn_top1")
    assert not (out / "grid").exists()
    used = json.loads((out / "figure3b_checkpoints.json").read_text())
    assert used["CO-BYOL"]["checkpoint"] == str(co)
    assert used["BYOL"]["checkpoint"] == str(byol / "checkpoint.pt")
    assert used["BYOL"]["images"] == 16
    assert "knn_top1" in _csv(out / "figure3a.csv")[0]
    assert (out / "figure3a.png").is_file() and (out / "figure3b.png").is_file()


def test_figure4_small_scale(figure4_small: tuple[Path, Any]) -> None:
    out, nb = figure4_small
    for f in ("figure4.png", "figure4.json", "figure4.npz"):
        assert (out / f).is_file(), f
    assert (out / "checkpoints" / "byol" / "checkpoint.pt").is_file()
    assert (out / "checkpoints" / "co_byol" / "checkpoint.pt").is_file()
    assert _pngs_shown(nb) == 1

    stats = json.loads((out / "figure4.json").read_text())
    assert list(stats) == ["BYOL", "CO-BYOL"]
    for s in stats.values():
        assert s["feature_map"] == [3, 3]  # 20 px with the small-image stem: (0.5) is the centre
        assert [p["position"] for p in s["positions"]] == POSITIONS
        assert [p["index"] for p in s["positions"]] == [[0, 0], [0, 1], [1, 0], [1, 1]]
        assert all(len(p["per_image"]) == 2 and p["per_image"][0]["total"] > 0 for p in s["positions"])
    with np.load(out / "figure4.npz") as raw:
        assert raw["BYOL_maps"].shape == (2, 4, 20, 20)
        assert raw["CO-BYOL_images"].shape == (2, 3, 20, 20)
        assert not np.allclose(raw["BYOL_maps"], raw["CO-BYOL_maps"])


def test_figure4_full_scale_inputs(figure4_small: tuple[Path, Any], tmp_path: Path) -> None:
    """Given checkpoints and scikit-image sample photos, the notebook trains nothing and uses them."""
    small, _ = figure4_small
    out = tmp_path / "figure4"
    images = ["skimage:astronaut", "skimage:coffee"]
    execute("figure4.ipynb", out, BYOL_CKPT=str(small / "checkpoints" / "byol" / "checkpoint.pt"),
            CO_BYOL_CKPT=str(small / "checkpoints" / "co_byol"), IMAGES=images)
    assert not (out / "checkpoints").exists()
    stats = json.loads((out / "figure4.json").read_text())
    assert stats["BYOL"]["images"] == images
    assert stats["CO-BYOL"]["checkpoint"] == str(small / "checkpoints" / "co_byol" / "checkpoint.pt")
    assert (out / "figure4.png").is_file()
