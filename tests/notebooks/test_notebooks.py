"""The notebooks run top to bottom (nbclient): at small scale, at their default (demo) scale on a fake
demo folder and on none, and pointed at existing tables and checkpoints.

Each notebook has one parameter cell (tagged ``parameters``); like papermill, the tests insert a cell
right after it that sets new values (at least ``OUT_DIR``, a temporary folder), and run the kernel in
a temporary working directory so that nothing is written into the checkout. The small-scale runs are
module fixtures: the other tests reuse the tables and checkpoints they made instead of training
again. CI never trains at the demo's budget: the fake demo folder holds two tiny runs of the demo's
pair, and the demo-budget path is run with the tiny overrides on top of the demo's config.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import numpy as np
import pytest

from cossl_train.config import load_config
from cossl_train.errors import CosslError
from cossl_train.experiments.compare import run_dir
from cossl_train.experiments.demo import METHODS, demo_config, find_dir, split_pair, trained_pair
from cossl_train.experiments.runs import checkpoint_meta, ensure_evaluated
from cossl_train.methods import display_name
from cossl_train.trainer import pretrain

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


def _parameters(name: str) -> dict[str, Any]:
    """The values the notebook's parameter cell sets."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    values: dict[str, Any] = {}
    exec(nb.cells[_parameter_cell(nb)].source, values)  # the committed cell: assignments only
    return values


#: the tiny pre-training of figure4's small scale (20 px, 3x3 maps), used for the fake demo runs
TINY = _parameters("figure4.ipynb")["SMALL_OVERRIDES"]
BASE, CO = split_pair(METHODS)
LABELS = [display_name(BASE), display_name(CO)]


def _stamps(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _pngs_shown(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def figure3_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("nb") / "figure3"
    return out, execute("figure3.ipynb", out, SCALE="small")


@pytest.fixture(scope="module")
def figure4_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("nb") / "figure4"
    return out, execute("figure4.ipynb", out, SCALE="small")


@pytest.fixture(scope="module")
def fake_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo folder as `cossl-train demo` lays it out, holding seed 0 of the demo's pair, trained tiny and
    evaluated (its eval.json beside each checkpoint)."""
    demo = tmp_path_factory.mktemp("nb") / "demo"
    for method in (BASE, CO):
        cfg = load_config(None, [*TINY, f"method.name={method}", f"train.out_dir={run_dir(demo, method, 0)}",
                                 "eval.linear_epochs=20"])
        pretrain(cfg, progress=False)
        ensure_evaluated(run_dir(demo, method, 0) / "checkpoint.pt", cfg, progress=False)
    return demo


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
    values = _parameters(name)
    assert values["SCALE"] == "demo" and values["DEMO_DIR"] == "runs/demo"  # trained encoders by default
    assert values["BASE_CKPT"] is None and values["CO_CKPT"] is None


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
    execute("figure3.ipynb", out, RESULTS_CSV=str(grid_dir / "results.csv"), CO_CKPT=str(co), BASE_CKPT=str(byol),
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
    execute("figure4.ipynb", out, BASE_CKPT=str(small / "checkpoints" / "byol" / "checkpoint.pt"),
            CO_CKPT=str(small / "checkpoints" / "co_byol"), IMAGES=images)
    assert not (out / "checkpoints").exists()
    stats = json.loads((out / "figure4.json").read_text())
    assert stats["BYOL"]["images"] == images
    assert stats["CO-BYOL"]["checkpoint"] == str(small / "checkpoints" / "co_byol" / "checkpoint.pt")
    assert (out / "figure4.png").is_file()


def test_figure4_old_parameter_names(figure4_small: tuple[Path, Any], tmp_path: Path) -> None:
    """BYOL_CKPT / CO_BYOL_CKPT still work (with a note); set beside a different new name, they are refused."""
    small, _ = figure4_small
    byol, co = (str(small / "checkpoints" / m / "checkpoint.pt") for m in ("byol", "co_byol"))
    nb = execute("figure4.ipynb", tmp_path / "old", BYOL_CKPT=byol, CO_BYOL_CKPT=co)
    text = _stdout(nb)
    assert "BYOL_CKPT is now called BASE_CKPT" in text and "CO_BYOL_CKPT is now called CO_CKPT" in text
    stats = json.loads((tmp_path / "old" / "figure4.json").read_text())
    assert [s["checkpoint"] for s in stats.values()] == [byol, co]
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="BYOL_CKPT is the old name of BASE_CKPT"):
        execute("figure4.ipynb", tmp_path / "both", BYOL_CKPT=byol, BASE_CKPT=co, CO_CKPT=co)


def _stdout(nb: Any) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_figure4_default_scale_uses_the_demo_checkpoints(fake_demo: Path, tmp_path: Path) -> None:
    """At the default scale, the demo's seed-0 checkpoints of its pair are used as they are: nothing is trained."""
    before = _stamps(fake_demo)
    out = tmp_path / "figure4"
    nb = execute("figure4.ipynb", out, DEMO_DIR=str(fake_demo))
    assert _stamps(fake_demo) == before
    assert not (out / "checkpoints").exists()
    assert "the demo's checkpoints" in _stdout(nb) and "nothing is trained here" in _stdout(nb)
    stats = json.loads((out / "figure4.json").read_text())
    assert list(stats) == LABELS
    assert [s["checkpoint"] for s in stats.values()] == [str(run_dir(fake_demo, m, 0) / "checkpoint.pt")
                                                         for m in (BASE, CO)]
    for s in stats.values():  # two held-out images of the checkpoints' data
        assert s["feature_map"] == [3, 3] and len(s["images"]) == 2
    assert (out / "figure4.png").is_file()


def test_figure3_default_scale_uses_the_demo_checkpoints(figure3_small: tuple[Path, Any], fake_demo: Path,
                                                          tmp_path: Path) -> None:
    """Panel A keeps the tiny grid (reused here from the small run's folder); panel B takes the demo's checkpoints."""
    small, _ = figure3_small
    out = tmp_path / "figure3"
    shutil.copytree(small / "grid", out / "grid")  # finished cells are skipped: no grid training again
    before = _stamps(fake_demo)
    nb = execute("figure3.ipynb", out, DEMO_DIR=str(fake_demo), N_IMAGES=16)
    assert _stamps(fake_demo) == before
    assert not (out / "checkpoints").exists()
    text = _stdout(nb)
    assert "panel B: the demo's checkpoints" in text
    evaluated = [json.loads((run_dir(fake_demo, m, 0) / "eval.json").read_text()) for m in (BASE, CO)]
    for e in evaluated:  # the demo's own evaluation is shown beside each model
        assert f"linear top-1 {e['linear_top1']:.1f}%, kNN top-1 {e['knn_top1']:.1f}% (eval.json)" in text
    used = json.loads((out / "figure3b_checkpoints.json").read_text())
    assert list(used) == LABELS
    assert [u["checkpoint"] for u in used.values()] == [str(run_dir(fake_demo, m, 0) / "checkpoint.pt")
                                                        for m in (BASE, CO)]
    assert all(u["images"] == 16 for u in used.values())
    assert set(json.loads((out / "figure3b.json").read_text())) == set(LABELS)
    assert (out / "figure3a.png").is_file() and (out / "figure3b.png").is_file()


def test_figure4_default_scale_trains_at_the_demo_budget_without_demo(fake_demo: Path, tmp_path: Path) -> None:
    """Without a demo folder holding both runs, both are pre-trained with the demo's config (here with the tiny
    overrides on top, to stay fast) into OUT_DIR/checkpoints/<method>, and reused by a rerun."""
    partial = tmp_path / "partial_demo"  # only the base run: not a pair, so both are trained here
    shutil.copytree(run_dir(fake_demo, BASE, 0), run_dir(partial, BASE, 0))
    out = tmp_path / "figure4"
    nb = execute("figure4.ipynb", out, DEMO_DIR=str(partial), DEMO_OVERRIDES=TINY)
    text = _stdout(nb)
    assert f"{CO} absent" in text and "comes from runs of the demo's budget" in text
    assert f"{BASE} trained here" in text and f"{CO} trained here" in text
    ckpts = [out / "checkpoints" / m / "checkpoint.pt" for m in (BASE, CO)]
    stats = json.loads((out / "figure4.json").read_text())
    assert list(stats) == LABELS and [s["checkpoint"] for s in stats.values()] == [str(p) for p in ckpts]
    demo = demo_config()
    for m, p in zip((BASE, CO), ckpts, strict=True):  # the demo's config, with the tiny overrides on top
        _, stored = checkpoint_meta(p)
        assert stored["method"]["name"] == m and stored["train"]["seed"] == 0
        assert stored["train"]["probe_lr"] == demo.train.probe_lr and stored["augment"]["c_min"] == demo.augment.c_min
    before = _stamps(out / "checkpoints")
    nb = execute("figure4.ipynb", out, DEMO_DIR=str(partial), DEMO_OVERRIDES=TINY)
    assert f"{BASE} reused (finished earlier); {CO} reused (finished earlier)" in _stdout(nb)
    assert {k: v for k, v in _stamps(out / "checkpoints").items() if k.endswith(".pt")} == {
        k: v for k, v in before.items() if k.endswith(".pt")}


def test_trained_pair_helpers(fake_demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_pair(("co_simclr", "simclr")) == ("simclr", "co_simclr")
    for bad in (("simclr",), ("byol", "co_simclr"), ("byol", "simclr"), ("byol", "co_byol", "simclr")):
        with pytest.raises(CosslError, match="not a base method and its CO form"):
            split_pair(bad)
    # a relative DEMO_DIR is found from a folder below the one that holds it (a kernel in notebooks/)
    (tmp_path / "repo" / "notebooks").mkdir(parents=True)
    shutil.copytree(fake_demo, tmp_path / "repo" / "runs" / "demo")
    monkeypatch.chdir(tmp_path / "repo" / "notebooks")
    assert find_dir("runs/demo") == tmp_path / "repo" / "runs" / "demo"
    assert find_dir("runs/nowhere") == tmp_path / "repo" / "notebooks" / "runs" / "nowhere"
    pair = trained_pair("runs/demo", tmp_path / "unused")
    assert pair.source == "demo" and pair.co == tmp_path / "repo" / "runs" / "demo" / CO / "seed0" / "checkpoint.pt"
    assert not (tmp_path / "unused").exists()
