"""The CO objective diagnostic against a loop-by-loop reference."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import METHOD_OVERRIDES, TinyConvNet, perturb_targets

from cossl_analysis.analyses.co_objective import CoParts, co_objective, head_space_features
from cossl_analysis.errors import AnalysisError
from cossl_train.config import load_config
from cossl_train.encoder import Encoder, PoolMLP
from cossl_train.heads import PerPosition
from cossl_train.methods import build_method

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _model(name: str, *extra: str) -> torch.nn.Module:
    cfg = load_config(None, [*METHOD_OVERRIDES, f"method.name={name}", *extra])
    torch.manual_seed(0)
    model = build_method(cfg, Encoder(TinyConvNet(), MEAN, STD, head=PoolMLP(16, 24)))
    perturb_targets(model)
    with torch.no_grad():  # running statistics that differ from the initial ones
        for _ in range(2):
            model([torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)])
    return model.eval()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(("name", "extra", "path"), [
    ("co_byol", (), "local heads"),
    ("co_simclr", (), "local heads"),
    ("co_dino", (), "local heads"),
    ("co_mocov3", ("co.shared_heads=true",), "shared heads (global heads at every position)"),
    ("byol", (), "global heads at every position (never trained for it)"),
    ("simclr", (), "global heads at every position (never trained for it)"),
])
def test_objective_matches_a_loop_by_loop_reference(name: str, extra: tuple[str, ...], path: str) -> None:
    model = _model(name, "co.local_weight=0.5", *extra)
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(7, 3, 16, 16, generator=g), torch.rand(7, 3, 16, 16, generator=g)
    ref = copy.deepcopy(model)
    res = co_objective(model, a, b, batch_size=3)
    assert res.path == path and res.num_images == 7 and res.chance == pytest.approx(1 / 7)
    with torch.no_grad():
        fa = ref.encoder(a)
        rows = fa.permute(0, 2, 3, 1).reshape(-1, fa.shape[1])  # (b, i, j) order
        if path == "local heads":  # trained on local rows: read with their running statistics
            lq = ref.co.local_projector(rows)
            lq = ref.co.local_predictor(lq) if ref.co.local_predictor is not None else lq
        else:  # global heads on local rows: normalised with the local rows' own statistics, as in training
            heads = copy.deepcopy(ref).train()
            lq = heads.projector(heads.encoder.head(rows))
            lq = heads.predictor(lq) if heads.predictor is not None else lq
        lq = lq.reshape(7, -1, lq.shape[-1]).numpy()
        enc_t, proj_t = (ref.target_encoder, ref.target_projector) if ref.momentum else (ref.encoder, ref.projector)
        t = proj_t(enc_t.pool(enc_t(b))).numpy()
        gq = ref.projector(ref.encoder.pool(fa))
        gq = (ref.predictor(gq) if ref.predictor is not None else gq).numpy()
    n, p = lq.shape[:2]
    own = [_cos(lq[i, k], t[i]) for i in range(n) for k in range(p)]
    other = [_cos(lq[i, k], t[j]) for i in range(n) for k in range(p) for j in range(n) if j != i]
    hits = [int(np.argmax([_cos(lq[i, k], t[j]) for j in range(n)]) == i) for i in range(n) for k in range(p)]
    assert res.own_cosine == pytest.approx(np.mean(own), abs=1e-5)
    assert res.other_cosine == pytest.approx(np.mean(other), abs=1e-5)
    assert res.retrieval == pytest.approx(np.mean(hits))
    side = int(round(p ** 0.5))
    np.testing.assert_allclose(res.own_cosine_map, np.array(own).reshape(n, side, side).mean(0), atol=1e-5)
    assert res.global_own_cosine == pytest.approx(np.mean([_cos(gq[i], t[i]) for i in range(n)]), abs=1e-5)
    gh = [int(np.argmax([_cos(gq[i], t[j]) for j in range(n)]) == i) for i in range(n)]
    assert res.global_retrieval == pytest.approx(np.mean(gh))
    assert not model.training
    # the diagnostic moved no running statistics
    for (k, v), (_, w) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


def test_objective_of_identical_heads_retrieves_every_image() -> None:
    """A model whose local query at every position is its global target retrieves its own image
    every time: a 1x1 map read through BatchNorm-free global heads, against view a itself."""
    torch.manual_seed(0)
    encoder, head = TinyConvNet().eval(), torch.nn.Linear(16, 8)
    parts = CoParts(encoder, global_head=head, target=lambda x: head(encoder(x).mean((2, 3))))
    a = torch.rand(5, 3, 4, 4)  # TinyConvNet: 1x1 map
    res = co_objective(parts, a, a)
    assert res.path.startswith("global heads at every position")
    assert res.own_cosine == pytest.approx(1.0, abs=1e-5) and res.retrieval == 1.0
    assert res.global_own_cosine == pytest.approx(1.0, abs=1e-5)


def test_parts_of_a_method_equal_the_method() -> None:
    """CoParts assembled by hand from a trained method's modules, as one's own loop would hold them,
    give the method's own numbers."""
    model = _model("co_simclr", "co.local_weight=0.5")
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(6, 3, 16, 16, generator=g), torch.rand(6, 3, 16, 16, generator=g)
    enc, proj = model.encoder, model.projector
    parts = CoParts(enc, global_head=torch.nn.Sequential(enc.head, proj),
                    target=lambda x: proj(enc.head(enc(x).mean((2, 3)))),
                    local_head=PerPosition(model.co.local_projector))
    for path in ("auto", "global"):
        mine, theirs = co_objective(parts, a, b, path=path), co_objective(model, a, b, path=path)
        assert mine.path == theirs.path
        for key in ("own_cosine", "other_cosine", "retrieval", "global_own_cosine", "global_retrieval"):
            assert getattr(mine, key) == pytest.approx(getattr(theirs, key), abs=1e-6), (path, key)


def test_bad_parts_and_views_are_one_line() -> None:
    with pytest.raises(AnalysisError, match="global_head must be an nn.Module"):
        CoParts(TinyConvNet(), global_head=lambda v: v, target=lambda x: x)
    parts = CoParts(TinyConvNet(), global_head=torch.nn.Linear(16, 8), target=lambda x: x)
    with pytest.raises(AnalysisError, match="same N images"):
        co_objective(parts, torch.rand(4, 3, 8, 8), torch.rand(3, 3, 8, 8))
    with pytest.raises(AnalysisError, match="cossl method .* or CoParts"):
        co_objective(torch.nn.Linear(2, 2), torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))


def test_head_space_features_are_the_compared_representations() -> None:
    model = _model("co_byol", "co.local_weight=0.5")
    x = torch.rand(4, 3, 16, 16)
    glob, loc = head_space_features(model, x, batch_size=3)
    res = co_objective(model, x, x)
    assert glob.shape == (4, 16) and loc.shape[0] == 4 and loc.shape[-1] == 16
    with torch.no_grad():
        t = model.target_projector(model.target_encoder.pool(model.target_encoder(x)))
    t = torch.nn.functional.normalize(t, dim=-1)
    own = (torch.nn.functional.normalize(loc, dim=-1) * t.unsqueeze(1).detach()).sum(-1).mean()
    assert res.own_cosine == pytest.approx(own.item(), abs=1e-5)
