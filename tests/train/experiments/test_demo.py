"""The main job end to end on a reduced budget: the seeds' table and the report with every section.

The full demo's numbers are recorded in the README, never asserted here."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, flat_config

from cossl_train.experiments.demo import run_demo

#: the demo shrunk to seconds: the digit scenes at 16 px, a width-8 network, 1 epoch of 2 steps, 2 seeds
TINY_DEMO = tuple(o for o in TINY_OVERRIDES if not o.startswith(
    ("backbone.name", "backbone.small_image", "data.dataset", "data.digits_size"))) + (
    "data.dataset=scenes", "data.scenes_size=16", "backbone.name=rf_resnet18_rf13", "train.epochs=1",
    "train.max_steps_per_epoch=2", "data.limit=128",
    "train.batch_size=32", "eval.linear_epochs=3")
REPORT = ("images=24", "erf.images=2", "erf.show=1", "robustness.corruptions=[gaussian_noise,speckle_noise]",
          "robustness.eps=[1]", "robustness.pgd_steps=1", "robustness.workers=1",
          "internal_corruption.strengths=[0,0.5]")
SECTIONS = ("Global against local similarity (Figure 3B)", "Effective receptive fields (Figure 4)", "Patch dropping",
            "Internal corruption and internal masking", "Image corruptions (ImageNet-C)",
            "Adversarial attacks (FGSM, PGD)", "Large-crop study", "Summary", "Models")


@pytest.mark.timeout(900)
def test_demo_trains_compares_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    res = run_demo(out, seeds=2, progress=False, overrides=TINY_DEMO, report_settings=REPORT)
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["encoder"], r["seed"]) for r in rows} == {(e, s) for e in ("random init", "simclr", "co_simclr")
                                                         for s in ("0", "1")}
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("linear_top1", "linear_top5", "knn_top1"))
    table, paired = (out / "results.md").read_text().split("\n\nPaired by seed:\n\n")
    assert table.strip() in printed and "±" in table and "| co_simclr |" in table
    # paired by seed: CO against its base, the base against the random encoder, each as a sentence
    assert "linear top-1: co_simclr - simclr = " in paired and "kNN top-1: simclr - random init = " in paired
    assert paired.strip() in printed
    # the stages' times: every run and random-init evaluation, then the report
    stages = json.loads((out / "timings.json").read_text())["stages"]
    assert [s["what"] for s in stages] == [*(f"{m} seed {k}" for m in ("random init", "simclr", "co_simclr")
                                             for k in (0, 1)), "report"]
    # each run's stage split into its pre-training and its evaluation, both inside the stage's time
    for s in stages[:-1]:
        assert 0 < s["eval_seconds"] <= s["seconds"] and s["train_seconds"] <= s["seconds"], s
        assert (s["train_seconds"] > 0) == (not s["what"].startswith("random init")), s
    # the report: every section, every number finite, printed path
    page = Path(res["report"])
    assert page == out / "report" / "report.html" and f"report: {page}" in printed
    html = page.read_text()
    for title in SECTIONS:
        assert f">{title}<" in html, title
    assert "nan" not in " ".join(re.findall(r"<td>([^<]*)</td>", html)).lower()
    summary = json.loads((out / "report" / "manifest.json").read_text())["commands"]["report"]["summary"]
    assert set(summary["similarity"]) == {"SimCLR", "CO-SimCLR"}
    # the summary holds "mean ± std" strings, one per method and metric
    cells = [v for section in summary.values() for method in section.values() for v in method.values()]
    assert cells and all(re.fullmatch(r"-?\d+\.\d+ ± \d+\.\d+", v) for v in cells), cells



def test_study_preset_is_the_demo_recipe_with_rf29_at_32_px_trained_longer() -> None:
    """--preset study changes the backbone's receptive field, the resolution and the budget (and
    where a plain pretrain writes), nothing else of the recipe."""
    from cossl_train.cli import build_parser
    from cossl_train.errors import CosslError
    from cossl_train.experiments.demo import PRESETS, demo_config

    demo, study = flat_config(demo_config()), flat_config(demo_config(preset="study"))
    assert {k for k in demo if demo[k] != study[k]} == {"backbone.name", "augment.resolution", "train.epochs",
                                                         "train.keep_epochs", "train.out_dir"}
    assert (demo["backbone.name"], study["backbone.name"]) == ("rf_resnet18_rf13", "rf_resnet18_rf29")
    assert (demo["augment.resolution"], study["augment.resolution"]) == (24, 32)
    assert (demo["train.epochs"], study["train.epochs"], study["train.keep_epochs"]) == (8, 24, (8,))
    assert demo_config(["train.epochs=50"], preset="study").train.epochs == 50  # overrides come last
    with pytest.raises(CosslError, match="--preset 'nope' is not one of demo, study"):
        demo_config(preset="nope")
    args = build_parser().parse_args(["demo", "--preset", "study"])
    assert args.preset == "study" and args.out is None
    demo_action = next(a for a in build_parser()._subparsers._group_actions[0].choices["demo"]._actions
                       if a.dest == "preset")
    assert tuple(demo_action.choices) == tuple(PRESETS)
