"""``cossl-analysis``: every command runs on tiny digits checkpoints and writes figures, numbers and an
HTML page; the full report has every section with finite numbers; the numbers agree with direct
computations; a rerun recomputes nothing; errors are one line with exit status 2."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import runpy
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import json_numbers
from scipy.stats import pearsonr

from cossl_analysis import load_analysis_config, load_checkpoint, load_eval_set, probe_accuracy, write_report
from cossl_analysis.cli import main, split_inputs

N_IMAGES = 32  # tiny checkpoints: 16 px digits, 2x2 feature maps; 32 images -> 496 pairs
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]
#: the report's settings in these tests: tiny, but every analysis runs
SMALL = [f"images={N_IMAGES}", "erf.images=4", "erf.show=2", "robustness.corruptions=[gaussian_noise,speckle_noise]",
         "robustness.severities=[1]", "robustness.eps=[1]", "robustness.pgd_steps=2", "robustness.workers=1",
         "internal_corruption.strengths=[0,0.5]"]
SMALL_ARGV = [*SMALL, "--no-progress"]
SECTIONS = ("Global against local similarity (Figure 3B)", "Effective receptive fields (Figure 4)", "Patch dropping",
            "Internal corruption and internal masking", "Image corruptions (ImageNet-C)",
            "Adversarial attacks (FGSM, PGD)", "Large-crop study", "Summary", "Models")


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _checkpoints(tiny_checkpoints: dict) -> list[str]:
    return [str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"])]


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def report_run(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full report through the Python API, once for the tests that read its files."""
    out = tmp_path_factory.mktemp("analysis_report")
    groups = {"BYOL": [tiny_checkpoints["byol"]], "CO-BYOL": [tiny_checkpoints["co_byol"]]}
    page = write_report(groups, out, load_analysis_config(SMALL), progress=False)
    assert page == out / "report.html"
    return out


# --------------------------------------------------------------------------------------------
# the full report
# --------------------------------------------------------------------------------------------


def test_report_has_every_section_with_finite_numbers(report_run: Path) -> None:
    html = (report_run / "report.html").read_text()
    for title in SECTIONS:
        assert f">{title}<" in html, title
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # similarity, 2 ERF, patch drop, CO objective, internal, 2 corruption, adversarial, large crop
    assert len(images) == 10
    linked = set(re.findall(r'href="([^"]+)"', html))
    assert linked and all((report_run / f).is_file() for f in linked)
    for name in ("erf/erf.json", "similarity/similarity.json", "patch_drop/patch_drop.json",
                 "internal_corruption/internal.json", "robustness/corruption.json", "robustness/adversarial.json",
                 "robustness/large_crop.json", "manifest.json"):
        numbers = json_numbers(_json(report_run / name))
        assert numbers and all(math.isfinite(x) for x in numbers), name
    # every cell of every table holds a number (or the mean ± std of numbers), never NaN
    cells = re.findall(r"<td>([^<]*)</td>", html)
    assert "nan" not in " ".join(cells).lower()
    summary = _json(report_run / "manifest.json")["commands"]["report"]["summary"]
    assert set(summary["similarity"]) == set(summary["corruption"]) == {"BYOL", "CO-BYOL"}
    # one section per registered analysis, in the registry's order, named as it names them
    from cossl_analysis.registry import registered

    assert list(summary) == [a.name for a in registered()]
    positions = [html.index(f'<h2 id="{a.name}">{a.title}</h2>') for a in registered()]
    assert positions == sorted(positions)


def test_rerun_recomputes_nothing(report_run: Path, tiny_checkpoints: dict, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import cossl_analysis.report.erf as E
    import cossl_analysis.report.sweeps as R

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("recomputed a finished result")

    monkeypatch.setattr(R, "compute_point", must_not_run)
    monkeypatch.setattr(E, "erf_map", must_not_run)
    before = (report_run / "cells.json").read_text()
    code, out, err = _run(capsys, "report", *_checkpoints(tiny_checkpoints), "--out", report_run, *SMALL_ARGV)
    assert code == 0, err
    assert out.strip() == str(report_run / "report.html")
    assert "Results computed in this run: 0;" in (report_run / "report.html").read_text()
    assert (report_run / "cells.json").read_text() == before


def test_erf_numbers(report_run: Path) -> None:
    summary = _json(report_run / "erf/erf.json")
    assert set(summary) == {"BYOL", "CO-BYOL"}
    for label, s in summary.items():
        maps = np.load(report_run / "erf" / f"{label}_maps.npy")
        assert maps.shape == (4, 4, 16, 16) and np.isfinite(maps).all() and (maps >= 0).all()
        assert s["feature_map"] == [2, 2] and s["num_images"] == 4
        # Figure 4's positions on a 2x2 map: (0,0) (0,0.5) (0.5,0) (0.5,0.5) -> the four cells.
        assert [p["index"] for p in s["positions"]] == [[0, 0], [0, 1], [1, 0], [1, 1]]
        for t, p in enumerate(s["positions"]):
            assert p["total"] == pytest.approx(float(maps[:, t].mean(axis=0).sum()), rel=1e-5) and p["total"] > 0
            assert 0 < p["rms_radius"] < 16


def test_similarity_numbers_match_the_csv(report_run: Path) -> None:
    summary = _json(report_run / "similarity/similarity.json")
    columns: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(report_run / "similarity/similarity.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            columns[row["label"]].append((float(row["global_sim"]), float(row["local_sim"])))
    assert set(columns) == {"BYOL", "CO-BYOL"}
    for label, pairs in columns.items():
        g, loc = np.array(pairs).T
        assert len(g) == N_IMAGES * (N_IMAGES - 1) // 2 == summary[label]["num_pairs"]
        assert np.all(np.abs(g) <= 1 + 1e-9) and np.all(np.abs(loc) <= 1 + 1e-9)
        assert summary[label]["pearson_c"] == pytest.approx(pearsonr(g, loc).statistic, abs=1e-9)


def test_patch_drop_and_internal_corruption_match_probe_accuracy(report_run: Path, tiny_checkpoints: dict) -> None:
    drop = _json(report_run / "patch_drop/patch_drop.json")["per_checkpoint"]
    internal = _json(report_run / "internal_corruption/internal.json")
    assert internal["layer"] == ["backbone.layer3"]  # "auto" on a ResNet
    for label, key in (("BYOL", "byol"), ("CO-BYOL", "co_byol")):
        pre = load_checkpoint(tiny_checkpoints[key])
        data = load_eval_set(pre.config, N_IMAGES, progress=False)
        assert pre.probe is not None and data.labels is not None
        direct = probe_accuracy(pre.encoder, pre.probe, data.images, data.labels)
        d = drop[label]
        assert d["num_positions"] == 4 and d["fraction_dropped"] == [k / 4 for k in d["num_dropped"]]
        assert d["cosine_mean"][0] == pytest.approx(1.0, abs=1e-6)
        assert d["accuracy"][0] == pytest.approx(direct, abs=1e-12)
        assert d["intact_accuracy"] == pytest.approx(direct, abs=1e-12)
        for kind in ("noise", "mask"):
            assert internal[kind]["strengths"] == [0.0, 0.5]
            assert internal[kind]["per_checkpoint"][label][0] == pytest.approx(direct, abs=1e-12)  # s = 0: no-op


# --------------------------------------------------------------------------------------------
# each command writes its files
# --------------------------------------------------------------------------------------------

EXPECTED = {
    "erf": ["erf/erf.json", "erf/figure4.png", "erf/erf_mean.png", "erf/BYOL_maps.npy", "erf/CO-BYOL_maps.npy"],
    "similarity": ["similarity/similarity.png", "similarity/similarity.csv", "similarity/similarity.json"],
    "patch-drop": ["patch_drop/patch_drop.png", "patch_drop/patch_drop.json"],
    "internal-corruption": ["internal_corruption/internal.png", "internal_corruption/internal.json"],
}
EXTRA_ARGS = {
    "erf": ["erf.positions=[[0,0],[0.5,0.5]]", "erf.images=2", "erf.show=1"],
    "similarity": ["similarity.mode=same"],
    "patch-drop": ["patch_drop.mode=position", "patch_drop.fractions=[0,0.5,1]"],
    "internal-corruption": ["internal_corruption.kinds=[zero,mask]", "internal_corruption.layer=backbone.layer2",
                            "internal_corruption.strengths=[0,0.5,1]"],
}


@pytest.mark.parametrize("command", list(EXPECTED))
def test_command_writes_its_files(command: str, tiny_checkpoints: dict, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, command, *_checkpoints(tiny_checkpoints), "--out", out, "images=8",
                             "--no-progress", *EXTRA_ARGS[command])
    assert code == 0, err
    assert stdout.strip() == str(out / f"{command}.html")
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert set(EXPECTED[command]) <= written
    for name in EXPECTED[command]:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
    manifest = _json(out / "manifest.json")["commands"]
    assert list(manifest) == [command]
    assert set(EXPECTED[command]) - {n for n in EXPECTED[command] if n.endswith(".png")} <= set(
        manifest[command]["files"])
    assert [m["label"] for m in manifest[command]["models"]] == ["BYOL", "CO-BYOL"]
    assert manifest[command]["evaluation"]["n_images"] == 8 and manifest[command]["evaluation"]["split"] == "val"


def test_every_command_evaluates_the_same_images(tiny_checkpoints: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """One data rule: the validation split of the first checkpoint's data config, for every command."""
    indices = {}
    for command, extra in (("similarity", []), ("internal-corruption", ["internal_corruption.strengths=[0]"])):
        out = tmp_path / command
        code, _, err = _run(capsys, command, *_checkpoints(tiny_checkpoints)[::-1], "--out", out, "images=10",
                            "--no-progress", *extra)
        assert code == 0, err
        indices[command] = _json(out / "manifest.json")["commands"][command]["evaluation"]["indices"]
    pre = load_checkpoint(tiny_checkpoints["co_byol"])
    expected = load_eval_set(pre.config, 10, progress=False).indices
    assert indices["similarity"] == indices["internal-corruption"] == expected


def test_repeated_labels_are_seeds_of_one_group(tiny_checkpoints: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas labelled alike form one group: one panel (its first seed), C as mean ± std."""
    import cossl_analysis.viz.similarity as S

    figures = []
    original = S.plot_similarity_panels

    def capture(*args: Any, **kwargs: Any) -> Any:
        figures.append(original(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(S, "plot_similarity_panels", capture)
    out = tmp_path / "out"
    ckpts = _checkpoints(tiny_checkpoints)
    from cossl_train.checkpoint import load_checkpoint as load_state
    from cossl_train.checkpoint import save_checkpoint

    state = load_state(ckpts[0])  # a replica of the BYOL run: recorded with another seed
    state["config"]["train"]["seed"] = 1
    save_checkpoint(tmp_path / "replica" / "checkpoint.pt", state)
    code, _, err = _run(capsys, "similarity", ckpts[0], tmp_path / "replica", ckpts[1], "--labels", "X,X,Y",
                        "--out", out, "images=6", "--no-progress")
    assert code == 0, err
    models = _json(out / "manifest.json")["commands"]["similarity"]["models"]
    assert [(m["label"], m["group"]) for m in models] == [("X seed=0", "X"), ("X seed=1", "X"), ("Y", "Y")]
    (fig,) = figures
    axes = [ax for ax in fig.axes if ax.collections]
    assert [ax.get_title().split(":")[0] for ax in axes] == ["X", "Y"]
    assert all(len(ax.collections[0].get_offsets()) == 15 for ax in axes)  # 6 images -> 15 pairs, one seed each
    summary = _json(out / "similarity/similarity.json")
    c = [summary[m["label"]]["pearson_c"] for m in models[:2]]
    assert f"C = {np.mean(c):.2f} ± {np.std(c, ddof=1):.2f}" in axes[0].get_title()


def test_labels_and_overrides(tiny_checkpoints: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    ckpt = tiny_checkpoints["co_byol"]
    # The same checkpoint twice, at another resolution: labels given, the images are 20 px.
    code, _, err = _run(capsys, "similarity", ckpt, "augment.resolution=20", ckpt.parent, "--labels", "A,B",
                        "--out", out, "images=6", "--no-progress")
    assert code == 0, err
    record = _json(out / "manifest.json")["commands"]["similarity"]
    assert [m["label"] for m in record["models"]] == ["A", "B"]
    assert record["overrides"] == ["augment.resolution=20"]
    assert record["evaluation"]["resolution"] == 20
    assert set(_json(out / "similarity/similarity.json")) == {"A", "B"}


def test_split_inputs() -> None:
    paths, overrides = split_inputs(["a/ckpt.pt", "data.root=/x", "runs/lam=1/ckpt.pt", "co.lambda=1", "run"])
    assert paths == ["a/ckpt.pt", "runs/lam=1/ckpt.pt", "run"]
    assert overrides == ["data.root=/x", "co.lambda=1"]


# --------------------------------------------------------------------------------------------
# errors: one line on stderr, exit status 2, nothing computed
# --------------------------------------------------------------------------------------------


def _no_probe_checkpoint(src: Path, dst: Path) -> Path:
    state = torch.load(src, map_location="cpu", weights_only=True)
    state["probe"] = state["probe_linear"] = None
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst


def _unlabelled_folder(root: Path, n: int = 12) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "case, expected",
    [
        ("foreign", "is not a cossl checkpoint"),
        ("missing", "checkpoint not found"),
        ("garbage", "is not a readable checkpoint"),
        ("no_probe", "cossl-train linear-probe"),
        ("unlabelled", "needs labelled images"),
        ("bad_layer", "has no module 'backbone.layer9'"),
        ("bad_override", "not allowed here"),
        ("bad_fraction", "patch_drop.fractions must lie in [0, 1]"),
        ("old_option", "--erf-images was replaced by the setting erf.images: pass erf.images=..."),
        ("unknown_setting", "bad config key or value 'erf.imgs'"),
        ("no_out", "the following arguments are required: --out"),
        ("two_images", "needs images=3 or more (Pearson C needs at least 2 image pairs)"),
        ("one_pair", "similarity.max_pairs=1 must be at least 2"),
    ],
)
def test_errors_are_one_line(case: str, expected: str, tiny_checkpoints: dict, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    good = tiny_checkpoints["co_byol"]
    out = tmp_path / "out"
    args: list[str | Path] = ["patch-drop", good]
    if case == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "foreign.pt")
        args = ["erf", good, tmp_path / "foreign.pt"]
    elif case == "missing":
        args = ["similarity", tmp_path / "missing.pt"]
    elif case == "garbage":
        (tmp_path / "garbage.pt").write_bytes(os.urandom(512))
        args = ["report", tmp_path / "garbage.pt"]
    elif case == "no_probe":
        args = ["internal-corruption", good, _no_probe_checkpoint(good, tmp_path / "np" / "checkpoint.pt")]
    elif case == "unlabelled":
        args += ["data.dataset=imagefolder", f"data.root={_unlabelled_folder(tmp_path / 'unl')}"]
    elif case == "bad_layer":
        args = ["internal-corruption", good, "internal_corruption.layer=backbone.layer9"]
    elif case == "bad_override":
        args += ["backbone.width=4"]
    elif case == "bad_fraction":
        args += ["patch_drop.fractions=[0,1.5]"]
    elif case == "old_option":
        args += ["--erf-images", "3"]
    elif case == "unknown_setting":
        args += ["erf.imgs=3"]
    elif case == "one_pair":
        args = ["similarity", good, "similarity.max_pairs=1"]
    images = "images=2" if case == "two_images" else "images=4"
    if case == "two_images":
        args = ["similarity", good]
    code, _, err = _run(capsys, *args, *([] if case == "no_out" else ["--out", out]), images, "--no-progress")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cossl-analysis: error: ") and expected in lines[0], lines[0]
    assert not (out / "cells.json").exists()  # refused before anything was computed


def test_module_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m cossl_analysis`` (run in-process: a fresh interpreter would spend seconds importing torch)."""
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    monkeypatch.setattr(sys, "argv", ["cossl-analysis", "erf", str(tmp_path / "foreign.pt"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("cossl_analysis", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"cossl-analysis: error: {tmp_path / 'foreign.pt'} is not a cossl checkpoint (no 'cossl-checkpoint' marker)"
    ]


def test_help_states_the_data_rule(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["report", "--help"], ["robustness", "--help"]):
        assert main(argv) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "validation split of the FIRST checkpoint's data config" in text, argv


def test_package_imports_lazily() -> None:
    """Importing the package (as corruption workers do) loads neither torch nor captum nor matplotlib,
    and every name of ``__all__`` still resolves."""
    check = (
        "import sys, cossl_analysis, cossl_analysis.analyses.corruption\n"
        "heavy = {'captum', 'matplotlib', 'torch', 'scipy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    import cossl_analysis

    assert set(cossl_analysis.__all__) == set(cossl_analysis._EXPORTS)
    assert all(getattr(cossl_analysis, name) is not None for name in cossl_analysis.__all__)
    assert cossl_analysis.load_checkpoint is load_checkpoint
    with pytest.raises(AttributeError, match="replaced by AnalysisConfig"):
        cossl_analysis.AnalysisOptions  # noqa: B018 - the name of an earlier version


def test_dir_shows_the_api_alone() -> None:
    """Tab completion and ``help()`` read ``dir()``: the API and the documented subpackages, none of the
    lazy loader's own helpers (``Any``, ``TYPE_CHECKING``, ``annotations``, ``importlib``)."""
    import cossl_analysis

    shown = {name for name in dir(cossl_analysis) if not name.startswith("__")}
    assert shown == set(cossl_analysis.__all__) | {"analyses", "config", "external", "report", "viz"}
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(dir(cossl_analysis))


def test_help_and_argument_errors_load_no_numerical_stack() -> None:
    """``--help``, an argument error and a bad setting answer without importing torch and the rest of the
    stack (their start-up is seconds on a small CPU; benchmarks/cli_startup.py prints the times)."""
    check = (
        "import sys\n"
        "from cossl_analysis.cli import main\n"
        "argvs = (['--help'], ['similarity', '--help'], ['report', '--help'], ['erf', 'x.pt'], ['nope'],\n"
        "         ['erf', 'x.pt', '--out', 'o', 'images=-1'], ['erf', 'x.pt', '--out', 'o', 'erf.nope=1'])\n"
        "codes = [main(list(a)) for a in argvs]\n"
        "heavy = {'torch', 'torchvision', 'captum', 'scipy', 'matplotlib', 'timm'} & set(sys.modules)\n"
        "assert codes == [0, 0, 0, 2, 2, 2, 2] and not heavy, (codes, heavy)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: cossl-analysis" in proc.stdout and "images=-1 must be >= 0" in proc.stderr
