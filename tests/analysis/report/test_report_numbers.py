"""What the report says about its numbers: paired differences by seed where groups meet, binomial
errors beside single seeds, the probe, what was reused, chance, and the names of the headline
numbers (ImageNet-C set, patch-drop fraction), the large-crop curves and Figure 3B's switch."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import TINY_OVERRIDES, random_image_folder
from scipy.stats import pearsonr
from scipy.stats import t as student_t

from cossl_analysis.analyses.corruption import corruption_set_text
from cossl_analysis.analyses.features import representations
from cossl_analysis.analyses.similarity import similarity_from_features
from cossl_analysis.cli import main
from cossl_analysis.report import load_checkpoint, load_eval_set
from cossl_analysis.report.large_crop import crop_curves
from cossl_train.checkpoint import load_checkpoint as load_state
from cossl_train.checkpoint import save_checkpoint
from cossl_train.config import apply_overrides, load_config
from cossl_train.trainer import pretrain

QUIET = ["--no-progress", "robustness.workers=1"]


@pytest.fixture(scope="module")
def seeds(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    """(method, train.seed) -> checkpoint: the session's seed-0 pair and a seed-1 pair trained alike (replicas:
    only the seed differs); ("mlp", 0) has a pool MLP."""
    root = tmp_path_factory.mktemp("seeds")
    out = {("byol", 0): tiny_checkpoints["byol"], ("co_byol", 0): tiny_checkpoints["co_byol"]}
    for method, seed, extra in (("byol", 1, []), ("co_byol", 1, []), ("mlp", 0, ["backbone.pool_mlp=true"])):
        name = "byol" if method == "mlp" else method
        cfg = load_config(None, [*TINY_OVERRIDES, f"method.name={name}", "train.epochs=3", f"train.seed={seed}",
                                 f"train.out_dir={root / f'{method}{seed}'}", *extra])
        pretrain(cfg, progress=False)
        out[(method, seed)] = root / f"{method}{seed}" / "checkpoint.pt"
    return out


def _run(*argv: object) -> None:
    code = main([str(a) for a in argv])
    assert code == 0


def _manifest(out: Path, command: str) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())["commands"][command]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------
# paired comparisons (issue 19 item 3, issue 18 item 17)
# ------------------------------------------------------------------------------------------------


def test_groups_meet_seed_by_seed_not_in_order(seeds: dict, tmp_path: Path) -> None:
    """CO-BYOL against BYOL, its seeds given in the other order: each seed is paired with its own."""
    out = tmp_path / "out"
    order = [seeds[("byol", 0)], seeds[("byol", 1)], seeds[("co_byol", 1)], seeds[("co_byol", 0)]]
    _run("similarity", *order, "--labels", "BYOL,BYOL,CO-BYOL,CO-BYOL", "--out", out, "images=12", *QUIET)
    record = _manifest(out, "similarity")
    labels = {(m["group"], m["seed"]): m["label"] for m in record["models"]}
    c = {k: json.loads((out / "similarity/similarity.json").read_text())[v]["pearson_c"] for k, v in labels.items()}
    (row,) = [r for r in record["paired"] if r["metric"] == "Pearson C"]
    expected = [c[("CO-BYOL", s)] - c[("BYOL", s)] for s in (0, 1)]
    assert (row["a"], row["b"], row["why"]) == ("CO-BYOL", "BYOL", "CO against its base method")
    assert row["seeds"] == ["0", "1"] and row["diffs"] == pytest.approx(expected, abs=1e-12)
    assert row["mean"] == pytest.approx(np.mean(expected)) and row["std"] == pytest.approx(np.std(expected, ddof=1))
    assert row["positive"] == sum(d > 0 for d in expected) and row["n"] == 2
    assert row["resolvable"] == pytest.approx(student_t.ppf(0.975, 1) * np.std(expected, ddof=1) / math.sqrt(2))
    html = (out / "similarity.html").read_text()
    assert "Paired comparisons" in html and row["which_way"].replace("'", "&#39;") in html
    assert row["note"] == ""


def test_seeds_found_in_one_group_only_are_named() -> None:
    from cossl_analysis.report.paired import comparisons

    def model(label: str, group: str, method: str, seed: int | None) -> Any:
        return SimpleNamespace(label=label, group=group, method_name=method, seed=seed)

    groups = {"BYOL": [model("b0", "BYOL", "byol", 0), model("b1", "BYOL", "byol", 1)],
              "CO-BYOL": [model("c0", "CO-BYOL", "co_byol", 0), model("c2", "CO-BYOL", "co_byol", 2)],
              "R18": [model("r", "R18", None, None)]}
    co, other = comparisons(groups)  # type: ignore[arg-type]
    assert (co.a, co.b) == ("CO-BYOL", "BYOL") and [(a.label, b.label) for a, b in co.pairs] == [("c0", "b0")]
    assert co.note == "seeds do not match: seed(s) 2 only in CO-BYOL; seed(s) 1 only in BYOL (left out)"
    assert (other.a, other.b, other.why) == ("R18", "BYOL", "against the first group")  # no base method: the first
    assert [(a.label, b.label) for a, b in other.pairs] == [("r", "b0")] and "paired by order" in other.note


def test_a_sweeps_co_group_meets_the_base_group_of_its_own_combination() -> None:
    """Groups of a sweep over the backbone: CO-SimCLR (rf17) against SimCLR (rf17), not the first
    SimCLR group; a CO-only change (w_s) still meets the one base group."""
    from cossl_analysis.report.paired import comparisons
    from cossl_train.config import load_config

    def group(name: str, method: str, *overrides: str) -> list[Any]:
        cfg = load_config(None, [f"method.name={method}", *overrides])
        return [SimpleNamespace(label=f"{name} s{s}", group=name, method_name=method, seed=s, config=cfg)
                for s in (0, 1)]

    rf = "backbone.name=rf_resnet18_rf17"
    groups = {"SimCLR": group("SimCLR", "simclr"), "CO-SimCLR": group("CO-SimCLR", "co_simclr"),
              "SimCLR rf17": group("SimCLR rf17", "simclr", rf),
              "CO-SimCLR rf17": group("CO-SimCLR rf17", "co_simclr", rf, "co.local_weight=0.7")}
    found = {c.a: c.b for c in comparisons(groups)}  # type: ignore[arg-type]
    assert found == {"CO-SimCLR": "SimCLR", "CO-SimCLR rf17": "SimCLR rf17"}


def test_single_seed_accuracies_carry_their_binomial_error(seeds: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run("internal-corruption", seeds[("byol", 0)], seeds[("co_byol", 0)], "--out", out, "images=24",
         "internal_corruption.kinds=[mask]", "internal_corruption.strengths=[0,0.5]", *QUIET)
    rows = _csv(out / "robustness/robustness.csv")
    html = (out / "internal-corruption.html").read_text()
    for label in ("BYOL", "CO-BYOL"):
        p = float(next(r["accuracy"] for r in rows if r["label"] == label and r["strength"] == "0.5"))
        error = 100 * math.sqrt(p * (1 - p) / 24)  # about ±10 points on 24 images
        assert f"<td>{100 * p:.1f} (± {error:.1f} binomial)</td>" in html
    (row,) = [r for r in _manifest(out, "internal-corruption")["paired"] if r["metric"] == "internal mask avg (%)"]
    assert row["n"] == 1 and row["resolvable"] is None and "one seed" in row["sentence"]


# ------------------------------------------------------------------------------------------------
# what the report says about itself (issue 18 item 16)
# ------------------------------------------------------------------------------------------------


def test_only_results_of_earlier_runs_count_as_reused(seeds: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["robustness", seeds[("byol", 0)], "--out", out, "images=12", "robustness.sweeps=[internal_corruption]",
            "internal_corruption.kinds=[mask]", "internal_corruption.strengths=[0,0.5]", *QUIET]
    _run(*argv)  # the clean point is read by two sections: neither read is a reuse
    html = (out / "robustness.html").read_text()
    assert "Results computed in this run: 2; reused from earlier runs: 0." in html
    _run(*argv)
    assert "Results computed in this run: 0; reused from earlier runs: 2." in (out / "robustness.html").read_text()


def test_chance_is_one_over_the_classes_of_the_dataset(tmp_path: Path) -> None:
    """A validation folder that lacks the last class still has the training folder's 3 classes."""
    random_image_folder(tmp_path / "train", classes=("a", "b", "c"), per_class=4)
    random_image_folder(tmp_path / "val", classes=("a", "b"), per_class=3)
    cfg = load_config(None, ["data.dataset=imagefolder", f"data.root={tmp_path / 'train'}",
                             f"data.val_root={tmp_path / 'val'}", "data.num_workers=0", "augment.resolution=16"])
    data = load_eval_set(cfg, progress=False)
    assert int(data.labels.max()) + 1 == 2 and data.num_classes == 3


def test_help_shows_probe_settings_only_where_a_probe_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    from cossl_analysis.cli import robustness_main

    for command, expected in (("erf", False), ("similarity", False), ("patch-drop", True), ("adversarial", True)):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert ("train_probe=" in text) is expected and ("mixed_probes=" in text) is expected, command
        assert "external.layer=" in text
    assert robustness_main(["--help"]) == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith("usage: cossl-robustness ") and "cossl-robustness robustness" not in usage


# ------------------------------------------------------------------------------------------------
# headline names (issue 18 items 14 and 16)
# ------------------------------------------------------------------------------------------------


def test_imagenet_c_mean_names_its_set_and_the_severity_curve_averages_the_same(seeds: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run("corruption", seeds[("byol", 0)], "--out", out, "images=12",
         "robustness.corruptions=[gaussian_noise,speckle_noise]", "robustness.severities=[1,3]", *QUIET)
    rows = _csv(out / "robustness/robustness.csv")
    summary = json.loads((out / "robustness/corruption.json").read_text())["BYOL"]
    def accuracy(name: str, severity: int) -> float:
        return float(next(r["accuracy"] for r in rows if r["setting"] == name and r["severity"] == str(severity)))

    for s in (1, 3):
        assert summary["by_severity"][str(s)] == accuracy("gaussian_noise", s)  # the mean's one corruption only
        assert summary["extra_by_severity"][str(s)] == accuracy("speckle_noise", s)
    header = _manifest(out, "corruption")["summary_table"]["header"]
    name = "ImageNet-C mean (%): 1 of the 15 ImageNet-C corruptions (gaussian_noise), severities 1, 3"
    assert name in header and not any(h.startswith("ImageNet-C mean (%)") and h != name for h in header)
    assert corruption_set_text(["gaussian_noise", "shot_noise", "impulse_noise"], [1, 2, 3, 4, 5]) == (
        "3 of the 15 ImageNet-C corruptions (noise), severities 1-5")


def test_patch_drop_says_all_but_one_only_when_it_is(seeds: dict, tmp_path: Path) -> None:
    for fractions, name in (("[0,0.5]", "cosine, 2 of 4 (50%) dropped"), ("[0,1]", "cosine, all but one dropped")):
        out = tmp_path / fractions
        _run("patch-drop", seeds[("byol", 0)], "--out", out, "images=8", f"patch_drop.fractions={fractions}",
             "patch_drop.accuracy=false", *QUIET)
        header = _manifest(out, "patch-drop")["summary_table"]["header"]
        assert header[3:] == [name]
        html = (out / "patch-drop.html").read_text()
        assert ("the last point is &#39;all but one&#39;" in html) is (fractions == "[0,1]")


# ------------------------------------------------------------------------------------------------
# the large-crop study (issue 18 item 13)
# ------------------------------------------------------------------------------------------------


def test_large_crop_curves_follow_labels_and_backbones() -> None:
    def model(label: str, group: str, backbone: str, c_min: float) -> Any:
        cfg = load_config(None, [f"backbone.name={backbone}", "backbone.small_image=false", "augment.resolution=224",
                                 f"augment.c_min={c_min}", f"train.seed={label[-1]}"])
        return SimpleNamespace(label=label, group=group, backbone=backbone, c_min=c_min, config=cfg, is_external=False,
                               epoch=10)

    models = [model("a1", "CO", "rf_resnet50_rf43", 0.2), model("a2", "CO", "rf_resnet50_rf43", 0.2),
              model("a3", "CO", "rf_resnet50_rf43", 0.7), model("b1", "CO", "resnet50", 0.2),
              SimpleNamespace(label="ext", group="X", is_external=True)]
    clean = {"a1": 0.5, "a2": 0.6, "a3": 0.7, "b1": 0.4}
    curves = crop_curves(models, clean)  # type: ignore[arg-type]
    assert list(curves) == ["CO, RF 43 px (rf_resnet50_rf43)", "CO, RF 427 px (resnet50)"]
    small, large = curves["CO, RF 43 px (rf_resnet50_rf43)"]
    assert (small.c_min, small.labels, large.labels) == (0.2, ["a1", "a2"], ["a3"])
    assert small.mean_std == pytest.approx((0.55, np.std([0.5, 0.6], ddof=1)))


def test_large_crop_groups_by_label_with_spread_over_seeds(seeds: dict, tmp_path: Path) -> None:
    """Two seeds of one label at one c_min are one point with its std; a copy pre-trained (as recorded)
    at another c_min is the curve's second point."""
    state = load_state(seeds[("byol", 0)])
    state["config"]["augment"]["c_min"] = 0.5
    save_checkpoint(tmp_path / "c05" / "checkpoint.pt", state)
    out = tmp_path / "out"
    _run("large-crop", seeds[("byol", 0)], seeds[("byol", 1)], tmp_path / "c05" / "checkpoint.pt", "--labels",
         "X,X,X", "--out", out, "images=16", *QUIET)
    crop = json.loads((out / "robustness/large_crop.json").read_text())
    assert list(crop) == ["X"]
    first, second = crop["X"]
    assert (first["c_min"], len(first["labels"]), second["c_min"], len(second["labels"])) == (0.08, 2, 0.5, 1)
    assert first["std"] == pytest.approx(np.std(first["clean"], ddof=1))


# ------------------------------------------------------------------------------------------------
# Figure 3B (issue 18 item 15)
# ------------------------------------------------------------------------------------------------


def test_similarity_global_switch_is_applied_and_named(seeds: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import cossl_analysis.viz.similarity as S

    titles: list[str] = []
    original = S.plot_similarity_panels

    def capture(*args: Any, **kwargs: Any) -> Any:
        titles.extend(kwargs["titles"].values())
        return original(*args, **kwargs)

    monkeypatch.setattr(S, "plot_similarity_panels", capture)
    ckpt = seeds[("mlp", 0)]
    pre = load_checkpoint(ckpt)
    data = load_eval_set(pre.config, 16, progress=False)
    glob, loc = representations(pre.encoder, data.images)
    for switch, global_reps in (("pooled", loc.mean(dim=1)), ("head", glob)):
        out = tmp_path / switch
        _run("similarity", ckpt, "--out", out, "images=16", f"similarity.global={switch}", *QUIET)
        result = json.loads((out / "similarity/similarity.json").read_text())["BYOL"]
        expected = similarity_from_features(global_reps, loc, mode="random", seed=0)
        assert result["pearson_c"] == pytest.approx(expected.pearson_c, abs=1e-9)
        assert result["pearson_c"] == pytest.approx(pearsonr(expected.global_sim, expected.local_sim).statistic)
        assert f"(similarity.global={switch})" in titles[-1] and "scatter: BYOL" in titles[-1]
    assert glob.shape == loc.mean(dim=1).shape and not np.allclose(glob, loc.mean(dim=1))  # the MLP is there


def test_similarity_refuses_a_one_by_one_map(seeds: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["similarity", str(seeds[("byol", 0)]), "--out", str(out), "augment.resolution=8", *QUIET])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "gives a 1x1 map" in line and "augment.resolution=" in line
    assert not (out / "cells.json").exists()


def test_first_seed_is_named_in_each_panel(seeds: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cossl_analysis.viz.similarity as S

    titles: list[str] = []
    original = S.plot_similarity_panels
    monkeypatch.setattr(S, "plot_similarity_panels",
                        lambda *a, **k: (titles.extend(k["titles"].values()), original(*a, **k))[1])
    _run("similarity", seeds[("byol", 0)], seeds[("byol", 1)], "--labels", "B,B", "--out", tmp_path / "o",
         "images=8", *QUIET)
    (title,) = titles
    assert "over 2 seeds" in title and "scatter: B seed=0 (first seed)" in title


def test_overrides_apply_to_external_only_comparisons() -> None:
    """Without a checkpoint the images come from the defaults (the embedded scenes) at the model's side."""
    from cossl_analysis.report.session import evaluation_config

    external = SimpleNamespace(is_external=True, resolution=48)
    cfg = evaluation_config([external], ["data.dataset=digits"])  # type: ignore[list-item]
    assert (cfg.data.dataset, cfg.augment.resolution) == ("digits", 48)
    assert evaluation_config([external]).data.dataset == "scenes"  # type: ignore[list-item]
    assert apply_overrides(cfg, []).augment.resolution == 48


# ------------------------------------------------------------------------------------------------
# only replicas are seeds; a sweep over method.* settings pairs within its combination
# ------------------------------------------------------------------------------------------------


def _config_group(name: str, method: str, *overrides: str, seeds: tuple[int, ...] = (0, 1)) -> list[Any]:
    cfg = [load_config(None, [f"method.name={method}", *overrides, f"train.seed={s}"]) for s in seeds]
    return [SimpleNamespace(label=f"{name} s{s}", group=name, method_name=method, seed=s, config=c, epoch=10)
            for s, c in zip(seeds, cfg, strict=True)]


@pytest.mark.parametrize("key", ["method.simclr.temperature", "method.ema_base"])
def test_a_sweep_over_method_settings_pairs_within_its_combination(key: str) -> None:
    """CO-SimCLR at T=0.5 meets SimCLR at T=0.5, not the first SimCLR group (T=0.1): a method's own
    settings are part of the combination; only the method's name and the CO term may differ."""
    from cossl_analysis.report.paired import comparisons

    groups = {f"{m} {v}": _config_group(f"{m} {v}", m.lower().replace("-", "_"), f"{key}={v}")
              for m in ("SimCLR", "CO-SimCLR") for v in (0.1, 0.5)}
    found = {c.a: c.b for c in comparisons(groups)}  # type: ignore[arg-type]
    assert found == {"CO-SimCLR 0.1": "SimCLR 0.1", "CO-SimCLR 0.5": "SimCLR 0.5"}


def _model(label: str, *overrides: str, seed: int = 0, epoch: int = 3, spec: str = "") -> Any:
    from torch import nn

    from cossl_analysis.report.loading import Model

    if spec:
        return Model(label, label, spec, nn.Identity(), None, "none", "none")
    cfg = load_config(None, [*overrides, f"train.seed={seed}", f"train.out_dir=runs/{label}{seed}{epoch}"])
    pre = SimpleNamespace(config=cfg, path=Path(f"runs/{label}{seed}/checkpoint.pt"), epoch=epoch)
    return Model(label, label, "ckpt", nn.Identity(), None, "none", "none", pre)  # type: ignore[arg-type]


def test_only_replicas_are_seeds_of_one_group() -> None:
    from cossl_analysis.report.setups import split_groups

    seeds = [_model("BYOL", seed=0), _model("BYOL", "train.log_every=3", seed=1)]  # logging is not a setup
    assert split_groups(seeds) == (seeds, [])
    models, notes = split_groups([*seeds, _model("BYOL", "augment.c_min=0.5"), _model("BYOL", epoch=2),
                                  _model("R", spec="torchvision:resnet18@a.pth"),
                                  _model("R", spec="torchvision:resnet18@b.pth")])
    assert [m.group for m in models] == ["BYOL (augment.c_min=0.08, epoch=3)"] * 2 + [
        "BYOL (augment.c_min=0.5, epoch=3)", "BYOL (augment.c_min=0.08, epoch=2)", "R", "R"]
    assert [m.label for m in models][:2] == ["BYOL (augment.c_min=0.08, epoch=3) seed=0",
                                             "BYOL (augment.c_min=0.08, epoch=3) seed=1"]
    assert {m.family for m in models} == {"BYOL", "R"}
    (note,) = notes
    assert note.startswith("the models labelled 'BYOL' are not seeds of one setup, so they are shown as 3 groups")
    mixed, _ = split_groups([_model("X", spec="torchvision:resnet18"), _model("X", spec="torchvision:resnet50")])
    assert [m.group for m in mixed] == ["X (torchvision:resnet18)", "X (torchvision:resnet50)"]


def test_a_report_does_not_average_different_models(seeds: dict, tmp_path: Path) -> None:
    """A checkpoint recorded with another co.local_weight under the same label as two replicas: the
    replicas are one group of 2 seeds, the other checkpoint a group of its own, and the page says why."""
    state = load_state(seeds[("co_byol", 0)])
    state["config"]["co"]["local_weight"] = 0.7
    save_checkpoint(tmp_path / "w07" / "checkpoint.pt", state)
    out = tmp_path / "out"
    _run("similarity", seeds[("co_byol", 0)], seeds[("co_byol", 1)], tmp_path / "w07" / "checkpoint.pt",
         "--labels", "CO,CO,CO", "--out", out, "images=8", *QUIET)
    record = _manifest(out, "similarity")
    groups = [m["group"] for m in record["models"]]
    assert groups == ["CO (co.local_weight=0.3)", "CO (co.local_weight=0.3)", "CO (co.local_weight=0.7)"]
    seeds_column = {row[0]: row[1] for row in record["summary_table"]["rows"]}
    assert seeds_column == {"CO (co.local_weight=0.3)": "2", "CO (co.local_weight=0.7)": "1"}
    assert any("labelled 'CO' are not seeds of one setup" in n for n in record["notes"])
    assert "are not seeds of one setup" in (out / "similarity.html").read_text()


def test_figures_name_the_seeds_they_draw(seeds: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Legends count a group's seeds or name its one seed; Figure 4 names the seed it draws; the ERF means
    and the CO-objective maps average every seed of a group and name them."""
    import cossl_analysis.report.co_objective as co
    import cossl_analysis.report.erf as erf
    import cossl_analysis.report.internal_corruption as internal

    seen: dict[str, Any] = {}

    def spy(module: Any, name: str) -> None:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: (seen.setdefault(name, (a, k)), original(*a, **k))[1])

    for module, name in ((internal, "plot_panels"), (erf, "plot_erf_comparison"), (erf, "plot_erf_means"),
                         (co, "plot_objective_maps")):
        spy(module, name)
    order = [seeds[("byol", 0)], seeds[("byol", 1)], seeds[("co_byol", 0)]]
    for command in ("internal-corruption", "erf", "co-objective"):
        _run(command, *order, "--labels", "B,B,C", "--out", tmp_path / "o", "images=8", "erf.images=2",
             "internal_corruption.kinds=[mask]", "internal_corruption.strengths=[0,0.5]", *QUIET)
    (panel,) = seen["plot_panels"][0][0]
    assert [s.label for s in panel.series] == ["B (2 seeds)", "C (seed 0)"] and panel.band == "std over seeds"
    assert list(seen["plot_erf_comparison"][0][1]) == ["B (seed 0)", "C (seed 0)"]
    means = seen["plot_erf_means"][0][0]
    assert list(means) == ["B (2 seeds)", "C (seed 0)"]
    per_seed = [np.load(tmp_path / "o" / "erf" / f).mean(axis=0) for f in ("B_seed_0_maps.npy", "B_seed_1_maps.npy")]
    scaled = [m / m.reshape(len(m), -1).max(axis=1)[:, None, None] for m in per_seed]
    np.testing.assert_allclose(means["B (2 seeds)"], np.mean(scaled, axis=0), rtol=1e-5)
    maps, names = seen["plot_objective_maps"][0]
    assert [len(v) for v in maps.values()] == [2, 1] and names == {"B": ["seed 0", "seed 1"], "C": ["seed 0"]}
