"""The co_objective command and report section: its numbers are those of the compute module on the
same two views, external models are left out (they have no heads), and the section says plainly
which way the CO model's local queries fall against the base model's global heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from cossl_analysis.analyses.co_objective import co_objective, head_space_features, head_space_pool_head
from cossl_analysis.analyses.features import representations
from cossl_analysis.analyses.patch_drop import patch_drop_from_features
from cossl_analysis.analyses.similarity import similarity_from_features
from cossl_analysis.cli import main
from cossl_analysis.report import load_checkpoint, load_eval_set
from cossl_analysis.report.co_objective import second_view
from cossl_train.checkpoint import load_method

N = 12


@pytest.fixture(scope="module")
def run(tiny_checkpoints: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("co_objective")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pth")
    out = root / "out"
    code = main(["co-objective", str(tiny_checkpoints["byol"]), str(tiny_checkpoints["co_byol"]),
                 f"torchvision:resnet18@{root / 'r18.pth'}", "--out", str(out), f"images={N}",
                 "augment.resolution=64", "--no-progress"])
    assert code == 0
    return out


def test_second_view_is_the_training_augmentation_at_fixed_seeds(tiny_checkpoints: dict) -> None:
    cfg = load_checkpoint(tiny_checkpoints["byol"]).config
    images = load_eval_set(cfg, 6, progress=False).images
    b = second_view(images, cfg.augment, seed=0)
    assert b.shape == images.shape and b.dtype == torch.float32 and 0 <= float(b.min()) and float(b.max()) <= 1
    assert torch.equal(b, second_view(images, cfg.augment, seed=0))  # the same for every model and run
    assert not torch.equal(b, second_view(images, cfg.augment, seed=1))
    assert (b - images.float() / 255).abs().mean() > 0.01  # another view, not the image itself


def test_numbers_are_the_compute_module_on_the_same_views(run: Path, tiny_checkpoints: dict) -> None:
    record = json.loads((run / "co_objective/co_objective.json").read_text())
    assert set(record) == {"BYOL", "CO-BYOL"}  # the external model has no heads
    pre = load_checkpoint(tiny_checkpoints["byol"])
    from cossl_train.config import apply_overrides

    cfg = apply_overrides(pre.config, ["augment.resolution=64"])
    data = load_eval_set(cfg, N, progress=False)
    a, b = data.pixels, second_view(data.images, cfg.augment, seed=0)
    for label, key, path in (("BYOL", "byol", "global heads at every position (never trained for it)"),
                             ("CO-BYOL", "co_byol", "local heads")):
        method = load_method(tiny_checkpoints[key])
        direct = co_objective(method, a, b)
        mine = record[label]["objective"]
        assert mine["path"] == path
        for field in ("own_cosine", "other_cosine", "retrieval", "global_own_cosine", "global_retrieval"):
            assert mine[field] == pytest.approx(getattr(direct, field), abs=1e-6), (label, field)
        np.testing.assert_allclose(mine["own_cosine_map"], direct.own_cosine_map, atol=1e-6)
        floor = co_objective(method, a, b, path="global")
        assert record[label]["floor"]["retrieval"] == pytest.approx(floor.retrieval)
        glob, loc = head_space_features(method, a)
        heads_c = similarity_from_features(glob, loc, mode="random", seed=0).pearson_c
        assert record[label]["heads_pearson_c"] == pytest.approx(heads_c, abs=1e-6)
        _, backbone_local = representations(method.encoder, data.images)
        drop = patch_drop_from_features(backbone_local, head=head_space_pool_head(method))  # random order
        assert record[label]["heads_drop"]["cosine_mean"] == pytest.approx(drop.cosine_mean, abs=1e-6)
        # the backbone's space is the similarity analysis's own number on the same images
        g, l_ = representations(load_checkpoint(tiny_checkpoints[key]).encoder, data.images)
        assert record[label]["backbone_pearson_c"] == pytest.approx(
            similarity_from_features(g, l_, mode="random", seed=0).pearson_c, abs=1e-9)


def test_section_names_the_views_the_skipped_models_and_which_way_it_falls(run: Path) -> None:
    html = (run / "co-objective.html").read_text()
    assert "view b: the same images through the training augmentation" in html
    assert "External models have no heads, so they are left out: torchvision:resnet18" in html
    # one seed a group: the seeds cannot tell, and the verdict says so rather than "do not"
    assert ("CO-BYOL: we cannot tell with one seed whether its local queries find their own image&#39;s target "
            "better than the base model&#39;s global heads applied at every position" in html)
    assert "own-image retrieval: CO-BYOL (local heads) - BYOL (global heads at every position)" in html
    header = json.loads((run / "manifest.json").read_text())["commands"]["co-objective"]["summary_table"]["header"]
    assert "CO objective: own-image retrieval (%)" in header and "Pearson C, heads&#39; space" not in header
    assert "Pearson C, heads' space" in header
