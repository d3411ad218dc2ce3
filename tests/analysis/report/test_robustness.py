"""cossl-robustness (= cossl-analysis robustness) end to end on the two tiny checkpoints: files,
numbers against direct and hand-written computations, resume, bad input.

Kept small for 2 shared cores: 32-48 evaluation images, a few corruptions (all 19 in one test,
at one severity), 3 PGD steps, corruption workers=1 (starting a worker pool costs more than it
saves on a few dozen 16 px images; the pool itself is tested in test_corruptions.py).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cossl_analysis.analyses import corruption as C
from cossl_analysis.analyses.internal_corruption import DEFAULT_STRENGTHS
from cossl_analysis.cli import robustness_main as main
from cossl_analysis.config import load_analysis_config
from cossl_analysis.errors import AnalysisError
from cossl_analysis.report import sweeps as R
from cossl_train.checkpoint import load_checkpoint, load_pretrained, save_checkpoint
from cossl_train.data import DigitsDataset

FAST = ["robustness.workers=1", "robustness.pgd_steps=3", "--no-progress"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def cell(rows: list[dict[str, str]], label: str, sweep: str, setting: str, column: str | None = None,
         level: float | None = None) -> float:
    """The accuracy of the one CSV row that matches."""
    hits = [r for r in rows if r["label"] == label and r["sweep"] == sweep and r["setting"] == setting
            and (column is None or float(r[column]) == level)]
    assert len(hits) == 1, hits
    return float(hits[0]["accuracy"])


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())["commands"]["robustness"]


def eval_images(out: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation images, rebuilt from the digits and the indices the report recorded."""
    meta = manifest(out)["evaluation"]
    digits = DigitsDataset("val", 16)  # the tiny checkpoints' data config: digits at 16 px
    index = torch.tensor(meta["indices"])
    return digits.images[index], digits.labels[index]


@torch.no_grad()
def direct_accuracy(classifier: torch.nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor) -> float:
    classifier.eval()
    return int((classifier(images_uint8.float() / 255).argmax(1) == labels).sum()) / len(labels)


def counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str,
             stop_after: int | None = None) -> dict[str, int]:
    """Count calls of ``module.name``; with ``stop_after``, raise KeyboardInterrupt on the next call."""
    original: Callable[..., Any] = getattr(module, name)
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if stop_after is not None and calls["n"] >= stop_after:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a sweep
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of the mean cross-entropy, clamped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int) -> torch.Tensor:
    """Random start in the L-inf ball (torch's global RNG seeded), then ``steps`` signed-gradient steps of
    2.5 eps / steps, each projected back onto the ball around x and clamped to [0, 1]."""
    torch.manual_seed(seed)
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + 2.5 * eps / steps * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


def without_probe(src: Path, dst: Path) -> Path:
    """A copy of a checkpoint whose run had no labels (no online probe)."""
    state = load_checkpoint(src)
    state["probe"] = state["probe_linear"] = None
    save_checkpoint(dst, state)
    return dst


# ------------------------------------------------------------------------------------------------
# one full report, shared by the tests that read it
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_run(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("robustness") / "report"
    argv = [str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"]), "--out", str(out), "images=48",
            "robustness.corruptions=[gaussian_noise,contrast,speckle_noise]", "robustness.severities=[1,3,5]",
            "robustness.eps=[1,4]", "robustness.workers=1", "robustness.pgd_steps=3"]  # progress bars on, as users see
    assert main(argv) == 0
    return {"out": out, "argv": argv}


def test_report_writes_every_file(report_run: dict[str, Any]) -> None:
    out = report_run["out"]
    for name in ("robustness.html", "robustness/robustness.csv", "robustness/corruption.json", "cells.json",
                 "robustness/corruption.png", "robustness/adversarial.png", "internal_corruption/internal.png",
                 "robustness/large_crop.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len(list((out / "corruption_cache").glob("*.npy"))) == 3 * 3  # one set per (corruption, severity)
    rows = read_csv(out / "robustness/robustness.csv")
    internal = sum(len(DEFAULT_STRENGTHS[k]) for k in ("noise", "mask"))
    per_model = 1 + 3 * 3 + 2 * 2 + internal  # clean, corruption, adversarial, internal (noise and mask)
    assert len(rows) == 2 * per_model
    assert {r["label"] for r in rows} == {"BYOL", "CO-BYOL"}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert {r["eps_255"] for r in rows if r["sweep"] == "adversarial"} == {"1.0", "4.0"}

    report = (out / "robustness.html").read_text()
    for text in (">Image corruptions (ImageNet-C)<", ">Adversarial attacks (FGSM, PGD)<",
                 ">Internal corruption and internal masking<", ">Large-crop study<", "single c_min",
                 'href="robustness/corruption.png"', 'href="robustness/robustness.csv"',
                 "<td>speckle_noise (extra)</td>"):
        assert text in report, text
    meta = manifest(out)
    assert meta["evaluation"]["n_images"] == 48 and len(meta["evaluation"]["indices"]) == 48
    assert [c["c_min"] for c in meta["models"]] == [0.08, 0.08]  # read from the checkpoints' configs
    assert all("online probe" in c["probe"] for c in meta["models"])


def test_numbers_agree_with_a_direct_computation(report_run: dict[str, Any], tiny_checkpoints: dict) -> None:
    out = report_run["out"]
    rows = read_csv(out / "robustness/robustness.csv")
    summary = json.loads((out / "robustness/corruption.json").read_text())
    images, labels = eval_images(out)
    pixels = images.float() / 255
    noisy = C.corrupt_batch(images, "gaussian_noise", 3, seed=0, workers=1)
    for label, key in (("BYOL", "byol"), ("CO-BYOL", "co_byol")):
        classifier = load_pretrained(tiny_checkpoints[key]).classifier().eval()
        clean = cell(rows, label, "clean", "clean")
        assert clean == pytest.approx(direct_accuracy(classifier, images, labels), abs=1e-12)
        assert cell(rows, label, "corruption", "gaussian_noise", "severity", 3) == pytest.approx(
            direct_accuracy(classifier, noisy, labels), abs=1e-12)
        # budgets are in /255 units: eps 4 means 4/255 in pixel space; attacks written out by hand here
        for eps in (1, 4):
            by_hand = fgsm(classifier, pixels, labels, eps / 255)
            assert (by_hand - pixels).abs().max() <= eps / 255 + 1e-7
            assert cell(rows, label, "adversarial", "fgsm", "eps_255", eps) == pytest.approx(
                _accuracy(classifier, by_hand, labels), abs=1e-12)
            by_hand = pgd(classifier, pixels, labels, eps / 255, steps=3, seed=0)
            assert (by_hand - pixels).abs().max() <= eps / 255 + 1e-7
            assert cell(rows, label, "adversarial", "pgd", "eps_255", eps) == pytest.approx(
                _accuracy(classifier, by_hand, labels), abs=1e-12)
        # the mean corruption accuracy is over the ImageNet-C corruptions only; the extra ones beside
        common = [float(r["accuracy"]) for r in rows if r["label"] == label and r["sweep"] == "corruption"
                  and r["setting"] in C.COMMON_CORRUPTIONS]
        extra = [float(r["accuracy"]) for r in rows if r["label"] == label and r["setting"] == "speckle_noise"]
        assert len(common) == 6 and len(extra) == 3
        assert summary[label]["mean_corruption_accuracy"] == pytest.approx(np.mean(common))
        assert summary[label]["extra_corruption_accuracy"] == pytest.approx(np.mean(extra))
        assert summary[label]["relative_drop"] == pytest.approx((clean - np.mean(common)) / clean)
        assert cell(rows, label, "internal_corruption", "noise", "strength", 0.0) == clean  # strength 0: a no-op


@torch.no_grad()
def _accuracy(classifier: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    return int((classifier(pixels).argmax(1) == labels).sum()) / len(labels)


def test_rerun_recomputes_nothing(report_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    cells = counting(monkeypatch, R, "compute_point")
    corrupted = counting(monkeypatch, R, "corrupt_batch")
    assert main([*report_run["argv"], "--no-progress"]) == 0
    assert cells["n"] == 0 and corrupted["n"] == 0
    assert "Results computed in this run: 0;" in (report_run["out"] / "robustness.html").read_text()


# ------------------------------------------------------------------------------------------------
# resume after an interruption, with all 19 corruptions through the report path
# ------------------------------------------------------------------------------------------------


def test_interrupted_run_resumes_without_recomputing(tiny_checkpoints: dict, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    argv = [str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"]), "--out", str(out), "images=32",
            "robustness.sweeps=[corruption]", "robustness.corruptions=[all]", "robustness.severities=[1]", *FAST]
    total = 2 * (1 + len(C.CORRUPTIONS))  # clean + 19 corruptions, two checkpoints

    with monkeypatch.context() as patch:
        counting(patch, R, "compute_point", stop_after=9)  # Ctrl-C while computing the 10th cell
        assert main(argv) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    first = json.loads((out / "cells.json").read_text())["cells"]
    assert len(first) == 9
    assert not (out / "robustness.html").exists()

    cells = counting(monkeypatch, R, "compute_point")
    work = counting(monkeypatch, C, "_run_corruptions")  # actual corrupting, after the disk cache
    assert main(argv) == 0
    assert cells["n"] == total - 9
    # The 9 cells were clean x 2 and 3.5 corruptions: the half-done 4th set comes from the cache.
    assert work["n"] == len(C.CORRUPTIONS) - 4
    second = json.loads((out / "cells.json").read_text())["cells"]
    assert len(second) == total
    assert all(second[key] == value for key, value in first.items())  # finished cells untouched

    rows = read_csv(out / "robustness/robustness.csv")
    for label in ("BYOL", "CO-BYOL"):
        assert sorted(r["setting"] for r in rows if r["label"] == label and r["sweep"] == "corruption") == sorted(
            C.CORRUPTIONS)
    summary = json.loads((out / "robustness/corruption.json").read_text())
    assert set(summary["BYOL"]["by_name"]) == set(C.CORRUPTIONS)
    report = (out / "robustness.html").read_text()
    assert all(f"<td>{name}" in report for name in C.CORRUPTIONS)
    assert "Adversarial attacks" not in report  # not asked for


# ------------------------------------------------------------------------------------------------
# probes and the large-crop study
# ------------------------------------------------------------------------------------------------


def test_train_probe_for_a_checkpoint_without_one(tiny_checkpoints: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import cossl_train.evaluate as E

    ckpt = without_probe(tiny_checkpoints["byol"], tmp_path / "noprobe" / "checkpoint.pt")
    out = tmp_path / "report"
    argv = [str(ckpt), "--out", str(out), "images=32", "robustness.sweeps=[]", "train_probe=true",
            "eval.linear_epochs=5", *FAST]
    trained = counting(monkeypatch, E, "linear_probe")
    assert main(argv) == 0
    assert trained["n"] == 1
    html = (out / "robustness.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and 'src="data:image/png;base64,' in html
    assert "trained by cossl-analysis" in manifest(out)["models"][0]["probe"]
    (probe_file,) = (out / "probes").glob("*.probe.pt")
    assert not ckpt.with_suffix(".probe.pt").exists()  # nothing written beside the user's checkpoint

    pre = load_pretrained(ckpt)
    probe = torch.nn.Linear(pre.encoder.num_features, 10)
    probe.load_state_dict(torch.load(probe_file, weights_only=True)["probe"])
    pre.probe = probe
    images, labels = eval_images(out)
    clean = cell(read_csv(out / "robustness/robustness.csv"), "BYOL", "clean", "clean")
    assert clean == pytest.approx(direct_accuracy(pre.classifier(), images, labels), abs=1e-12)

    assert main(argv) == 0
    assert trained["n"] == 1  # the stored probe is reused, so are the cells


def test_large_crop_study_reads_c_min_from_configs(tiny_checkpoints: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(tiny_checkpoints["byol"])]
    for c_min in (0.3, 0.7):  # same weights, other recorded crop scale: enough for the study's bookkeeping
        state = load_checkpoint(tiny_checkpoints["byol"])
        state["config"]["augment"]["c_min"] = c_min
        save_checkpoint(tmp_path / f"c{c_min}" / "checkpoint.pt", state)
        paths.append(str(tmp_path / f"c{c_min}" / "checkpoint.pt"))
    paths.append(str(tiny_checkpoints["co_byol"]))
    cells = counting(monkeypatch, R, "compute_point")
    out = tmp_path / "report"
    assert main([*paths, "--out", str(out), "images=32", "robustness.sweeps=[]", *FAST]) == 0
    assert cells["n"] == 2  # identical weights share their cells: BYOL once, CO-BYOL once
    crop = json.loads((out / "robustness/large_crop.json").read_text())
    assert [r["c_min"] for r in crop["BYOL"]] == [0.08, 0.3, 0.7]
    # not seeds of one setup: one group per c_min, one curve through them
    assert [r["labels"] for r in crop["BYOL"]] == [[f"BYOL (augment.c_min={c})"] for c in ("0.08", "0.3", "0.7")]
    assert len({r["clean"][0] for r in crop["BYOL"]}) == 1
    report = (out / "robustness.html").read_text()
    assert "Curves with a single c_min: CO-BYOL (0.08)" in report


# ------------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit status 2
# ------------------------------------------------------------------------------------------------


def _unlabelled_folder(root: Path) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    for i, image in enumerate(DigitsDataset("val", 16).images[:20]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f"{i:03d}.png")
    return root


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown_corruption", "unknown corruption 'fogg'"),
        ("severity_6", "severity 6 is outside 1-5"),
        ("bad_eps", "robustness.eps: -1 must be within 0-255"),
        ("old_sweep_name", "unknown sweep 'internal' (internal is now internal_corruption)"),
        ("unlabelled", "has no labels"),
        ("no_probe", "has no linear probe, which the internal-corruption analysis needs; run `cossl-train"),
        ("missing_checkpoint", "checkpoint not found"),
        ("other_resolution", "different resolutions"),
        ("bad_override", "not allowed here"),
        ("wrong_label_count", "--labels gives 1 labels for 2 checkpoints"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case: str, expected: str, tiny_checkpoints: dict, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    byol, co_byol = str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"])
    out = ["--out", str(tmp_path / "report"), *FAST]
    if case == "unknown_corruption":
        argv = [byol, "robustness.corruptions=[gaussian_noise,fogg]", *out]
    elif case == "severity_6":
        argv = [byol, "robustness.severities=[1,6]", *out]
    elif case == "bad_eps":
        argv = [byol, "robustness.eps=[-1]", *out]
    elif case == "old_sweep_name":
        argv = [byol, "robustness.sweeps=[internal]", *out]
    elif case == "unlabelled":
        folder = _unlabelled_folder(tmp_path / "flat")
        argv = [byol, "data.dataset=imagefolder", f"data.root={folder}", *out]
    elif case == "no_probe":
        argv = [str(without_probe(tiny_checkpoints["byol"], tmp_path / "noprobe.pt")), *out]
    elif case == "missing_checkpoint":
        argv = [str(tmp_path / "nowhere.pt"), *out]
    elif case == "other_resolution":
        state = load_checkpoint(tiny_checkpoints["co_byol"])
        state["config"]["augment"]["resolution"] = 32
        save_checkpoint(tmp_path / "r32.pt", state)
        argv = [byol, str(tmp_path / "r32.pt"), *out]
    elif case == "bad_override":
        argv = [byol, "backbone.width=4", *out]
    else:
        argv = [byol, co_byol, "--labels", "A", *out]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cossl-robustness: error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "report" / "cells.json").exists()  # nothing was computed


def test_argparse_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ckpt.pt"]) == 2  # --out missing
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0]


def test_settings_are_checked_and_put_in_canonical_order() -> None:
    rob = load_analysis_config(["robustness.corruptions=[all]"]).robustness
    assert rob.corruptions == C.CORRUPTIONS
    rob = load_analysis_config(["robustness.corruptions=[contrast,noise]"]).robustness
    assert rob.corruptions == ("gaussian_noise", "shot_noise", "impulse_noise", "contrast")
    assert load_analysis_config(["robustness.corruptions=[common]"]).robustness.corruptions == C.COMMON_CORRUPTIONS
    assert load_analysis_config(["robustness.severities=[5,1,1]"]).robustness.severities == (1, 5)
    assert load_analysis_config(["robustness.eps=[4,0.5]"]).robustness.eps == (0.5, 4.0)
    assert load_analysis_config(["robustness.sweeps=[]"]).robustness.sweeps == ()
    kinds = load_analysis_config(["internal_corruption.kinds=[mask,noise]"]).internal_corruption.kinds
    assert kinds == ("noise", "mask")
    with pytest.raises(AnalysisError, match="could not be converted to Integer"):
        load_analysis_config(["robustness.severities=[1.5]"])
    with pytest.raises(AnalysisError, match="unknown 'cw'"):
        load_analysis_config(["robustness.attacks=[cw]"])
    with pytest.raises(AnalysisError, match="fractions and must be <= 1"):
        load_analysis_config(["internal_corruption.kinds=[mask]", "internal_corruption.strengths=[0,2]"])
