"""``cossl-analysis``: every command runs on tiny digits checkpoints and writes figures and numbers;
the numbers agree with direct computations; errors are one line with exit status 2."""

from __future__ import annotations

import csv
import json
import os
import runpy
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from cossl_analysis import eval_data, load_checkpoint, probe_accuracy
from cossl_analysis.cli import main, split_inputs

N_IMAGES = 32  # tiny checkpoints: 16 px digits, 2x2 feature maps; 32 images -> 496 pairs
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _checkpoints(tiny_checkpoints: dict) -> list[str]:
    return [str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"])]


@pytest.fixture(scope="module")
def all_run(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cossl-analysis all`` on both checkpoints, run once for the tests that read its files."""
    out = tmp_path_factory.mktemp("analysis_all")
    code = main(["all", *_checkpoints(tiny_checkpoints), "--out", str(out), "--images", str(N_IMAGES),
                 "--no-progress", "--show", "2"])
    assert code == 0
    return out


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# each command writes its files
# --------------------------------------------------------------------------------------------

EXPECTED = {
    "erf": ["erf/erf_mean.png", "erf/erf_mean.json", *(f"erf/{m}/erf{ext}" for m in ("byol", "co_byol")
                                                      for ext in (".png", ".npz", ".json", "_mean.npy"))],
    "similarity": ["similarity/similarity.png", "similarity/similarity.csv", "similarity/similarity.json"],
    "patch-drop": ["patch_drop/patch_drop.png", "patch_drop/patch_drop.json"],
    "internal-corruption": ["internal_corruption/zero_backbone-layer3.png",
                            "internal_corruption/zero_backbone-layer3.json"],
}
EXTRA_ARGS = {
    "erf": ["--position", "0,0", "--position", "0.5,0.5", "--show", "1"],
    "similarity": ["--sim-mode", "same"],
    "patch-drop": ["--drop", "position", "--fractions", "0,0.5,1"],
    "internal-corruption": ["--kind", "zero", "--layer", "backbone.layer3", "--strengths", "0,0.5,1"],
}


@pytest.mark.parametrize("command", list(EXPECTED))
def test_command_writes_its_files(command: str, tiny_checkpoints: dict, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, command, *_checkpoints(tiny_checkpoints), "--out", out, "--images", "8",
                             "--no-progress", *EXTRA_ARGS[command])
    assert code == 0, err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([*EXPECTED[command], "manifest.json"])
    for name in EXPECTED[command]:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_MAGIC
    manifest = _json(out / "manifest.json")["analyses"]
    assert list(manifest) == [command]
    assert sorted(manifest[command]["files"]) == sorted(EXPECTED[command])
    assert [m["label"] for m in manifest[command]["models"]] == ["byol", "co_byol"]
    assert "byol:" in stdout and "co_byol:" in stdout


# --------------------------------------------------------------------------------------------
# the numbers of ``all``
# --------------------------------------------------------------------------------------------


def test_all_records_both_models_and_their_images(all_run: Path, tiny_checkpoints: dict) -> None:
    manifest = _json(all_run / "manifest.json")["analyses"]
    assert list(manifest) == ["erf", "similarity", "patch-drop", "internal-corruption"]
    pre = load_checkpoint(tiny_checkpoints["byol"])
    data = eval_data(pre.config, N_IMAGES)
    for record in manifest.values():
        assert [m["label"] for m in record["models"]] == ["byol", "co_byol"]
        for m in record["models"]:
            assert m["data"]["split"] == "val" and m["data"]["num_images"] == N_IMAGES
            assert m["data"]["indices"] == data.indices.tolist()  # the images are reproducible
    for name in ("erf/erf_mean.json", "similarity/similarity.json", "patch_drop/patch_drop.json",
                 "internal_corruption/noise_output.json"):
        assert set(_json(all_run / name)) == {"byol", "co_byol"}


def test_erf_numbers(all_run: Path) -> None:
    summary = _json(all_run / "erf/erf_mean.json")
    for label, s in summary.items():
        mean = np.load(all_run / "erf" / label / "erf_mean.npy")
        assert mean.shape == (4, 16, 16) and np.isfinite(mean).all() and (mean >= 0).all()
        assert s["feature_map"] == [2, 2] and s["num_images"] == N_IMAGES
        # Figure 4's positions on a 2x2 map: (0,0) (0,0.5) (0.5,0) (0.5,0.5) -> the four cells.
        assert [p["index"] for p in s["positions"]] == [[0, 0], [0, 1], [1, 0], [1, 1]]
        for t, p in enumerate(s["positions"]):
            assert p["total"] == pytest.approx(float(mean[t].sum()), rel=1e-5) and p["total"] > 0
            assert 0 < p["rms_radius_px"] < 16
        shown = np.load(all_run / "erf" / label / "erf.npz")["maps"]
        assert shown.shape == (2, 4, 16, 16)


def test_similarity_numbers_match_the_csv(all_run: Path) -> None:
    summary = _json(all_run / "similarity/similarity.json")
    columns: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(all_run / "similarity/similarity.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            columns[row["label"]].append((float(row["global_sim"]), float(row["local_sim"])))
    assert set(columns) == {"byol", "co_byol"}
    for label, pairs in columns.items():
        g, loc = np.array(pairs).T
        assert len(g) == N_IMAGES * (N_IMAGES - 1) // 2 == summary[label]["num_pairs"]
        assert np.all(np.abs(g) <= 1 + 1e-9) and np.all(np.abs(loc) <= 1 + 1e-9)
        c = summary[label]["pearson_c"]
        assert -1.0 <= c <= 1.0
        assert c == pytest.approx(pearsonr(g, loc).statistic, abs=1e-9)
        assert -1.0 <= summary[label]["intra_local_mean"] <= 1.0


def test_patch_drop_and_internal_corruption_match_probe_accuracy(all_run: Path, tiny_checkpoints: dict) -> None:
    drop = _json(all_run / "patch_drop/patch_drop.json")
    internal = _json(all_run / "internal_corruption/noise_output.json")
    for label in ("byol", "co_byol"):
        pre = load_checkpoint(tiny_checkpoints[label])
        data = eval_data(pre.config, N_IMAGES)
        assert pre.probe is not None and data.labels is not None
        direct = probe_accuracy(pre.encoder, pre.probe, data.images, data.labels)

        d = drop[label]
        assert d["fractions"][0] == 0.0 and d["num_positions"] == 4
        assert d["cosine_mean"][0] == pytest.approx(1.0, abs=1e-6)
        assert all(-1.0 <= c <= 1.0 + 1e-6 for c in d["cosine_mean"])
        assert d["accuracy"][0] == pytest.approx(direct, abs=1e-12)
        assert d["intact_accuracy"] == pytest.approx(direct, abs=1e-12)

        r = internal[label]
        assert r["strengths"][0] == 0.0 and r["kind"] == "noise" and r["module"] == ""
        assert r["num_images"] == N_IMAGES
        assert r["accuracy"][0] == pytest.approx(direct, abs=1e-12)
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"])


def test_labels_and_overrides(tiny_checkpoints: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    ckpt = tiny_checkpoints["co_byol"]
    # The same checkpoint twice, at another resolution: labels given, the images are 20 px.
    code, _, err = _run(capsys, "similarity", ckpt, "augment.resolution=20", ckpt.parent, "--labels", "A,B",
                        "--out", out, "--images", "6", "--no-progress")
    assert code == 0, err
    record = _json(out / "manifest.json")["analyses"]["similarity"]
    assert [m["label"] for m in record["models"]] == ["A", "B"]
    assert record["overrides"] == ["augment.resolution=20"]
    assert all(m["data"]["resolution"] == 20 for m in record["models"])
    assert set(_json(out / "similarity/similarity.json")) == {"A", "B"}


def test_split_inputs() -> None:
    paths, overrides = split_inputs(["a/ckpt.pt", "data.root=/x", "runs/lam=1/ckpt.pt", "co.lambda=1", "run"])
    assert paths == ["a/ckpt.pt", "runs/lam=1/ckpt.pt", "run"]
    assert overrides == ["data.root=/x", "co.lambda=1"]


# --------------------------------------------------------------------------------------------
# errors: one line on stderr, exit status 2, nothing written
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
    ],
)
def test_errors_are_one_line(case: str, expected: str, tiny_checkpoints: dict, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    good = tiny_checkpoints["co_byol"]
    args: list[str | Path] = ["patch-drop", good]
    if case == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "foreign.pt")
        args = ["erf", good, tmp_path / "foreign.pt"]
    elif case == "missing":
        args = ["similarity", tmp_path / "missing.pt"]
    elif case == "garbage":
        (tmp_path / "garbage.pt").write_bytes(os.urandom(512))
        args = ["all", tmp_path / "garbage.pt"]
    elif case == "no_probe":
        args = ["internal-corruption", good, _no_probe_checkpoint(good, tmp_path / "np" / "checkpoint.pt")]
    elif case == "unlabelled":
        args += ["data.dataset=imagefolder", f"data.root={_unlabelled_folder(tmp_path / 'unl')}"]
    elif case == "bad_layer":
        args = ["internal-corruption", good, "--layer", "backbone.layer9"]
    elif case == "bad_override":
        args += ["backbone.width=4"]
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, *args, "--out", out, "--images", "4", "--no-progress")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cossl-analysis: error: ") and expected in lines[0]
    assert not out.exists()  # refused before anything was written


def test_module_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m cossl_analysis`` (run in-process: a fresh interpreter would spend seconds importing torch)."""
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    monkeypatch.setattr(sys, "argv", ["cossl-analysis", "erf", str(tmp_path / "foreign.pt")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("cossl_analysis", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"cossl-analysis: error: {tmp_path / 'foreign.pt'} is not a cossl checkpoint (no 'cossl-checkpoint' marker)"
    ]


def test_package_imports_lazily() -> None:
    """Importing the package (as corruption workers do) loads neither torch nor captum nor matplotlib,
    and every name of ``__all__`` still resolves."""
    check = (
        "import sys, cossl_analysis, cossl_analysis.corruptions\n"
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
