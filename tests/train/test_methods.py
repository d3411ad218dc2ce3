"""The method family: w_s = 0 is the base method bit for bit, every head is trained in every
direction, and each CO term equals its definition recomputed with loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import METHOD_OVERRIDES as SMALL
from conftest import TinyConvNet
from conftest import perturb_targets as _perturb_targets
from loss_reference import co_terms

from cossl_train.config import load_config
from cossl_train.encoder import Encoder, PoolMLP, global_pool
from cossl_train.losses import view_pairs
from cossl_train.methods import BASE_METHODS, build_method, method_names

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
BASES = list(BASE_METHODS)
DIRECTIONS = ["local_to_global", "global_to_local", "both"]


def _views(seed: int = 0, b: int = 6, size: int = 16, n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, size, size, generator=g) for _ in range(n)]


def _make(name: str, *extra: str) -> torch.nn.Module:
    cfg = load_config(None, [*SMALL, f"method.name={name}", *extra])
    torch.manual_seed(0)
    return build_method(cfg, Encoder(TinyConvNet(), MEAN, STD))


def _loss_and_grads(model: torch.nn.Module, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    out = model(views)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None and not n.startswith("co.")}
    return out.loss.detach(), grads


def test_registry_lists_every_base_method_and_its_co_form() -> None:
    assert sorted(method_names()) == sorted(
        ["byol", "co_byol", "dino", "co_dino", "mocov3", "co_mocov3", "simclr", "co_simclr"])


@pytest.mark.parametrize("base", BASES)
def test_zero_local_weight_is_the_base_method_bit_for_bit(base: str) -> None:
    views = _views()
    loss_b, grads_b = _loss_and_grads(_make(base), views)
    loss_c, grads_c = _loss_and_grads(_make(f"co_{base}", "co.local_weight=0"), views)
    assert torch.equal(loss_b, loss_c)
    assert grads_b.keys() == grads_c.keys() and len(grads_b) > 4
    for name in grads_b:
        assert torch.equal(grads_b[name], grads_c[name]), name


@pytest.mark.parametrize("base", BASES)
def test_positive_local_weight_changes_encoder_gradients(base: str) -> None:
    views = _views()
    _, grads_b = _loss_and_grads(_make(base), views)
    _, grads_c = _loss_and_grads(_make(f"co_{base}", "co.local_weight=0.5"), views)
    name = "encoder.backbone.net.0.weight"
    assert not torch.allclose(grads_b[name], grads_c[name])


@pytest.mark.parametrize("shared", ["false", "true"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", method_names())
def test_every_trainable_parameter_receives_a_gradient(name: str, direction: str, shared: str) -> None:
    """A head that is built but never trained (e.g. a local projector whose momentum copy is the
    only thing used) is a bug; momentum copies are frozen and get none."""
    model = _make(name, f"co.direction={direction}", f"co.shared_heads={shared}", "co.local_weight=0.5",
                  "backbone.pool_mlp=true")
    model(_views(2)).loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(n.split(".")[0].startswith("target_") or ".target_" in n for n in frozen), frozen
    if model.momentum:
        assert all(p.grad is None for _, p in model.named_parameters() if not p.requires_grad)


def test_global_to_local_alone_builds_no_untrainable_local_heads() -> None:
    model = _make("co_byol", "co.direction=global_to_local")
    assert model.co.local_projector is None and model.co.target_local_projector is None
    assert model.co.momentum_pairs() == []


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rows(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B*h*w, C), positions in raster order: BatchNorm over all of them."""
    return fmap.flatten(2).transpose(1, 2).reshape(-1, fmap.shape[1])


def test_byol_loss_sums_the_two_view_orders() -> None:
    """BYOL's published loss: (2 - 2 cos(p1, z2')) + (2 - 2 cos(p2, z1')), batch means."""
    views = _views(4)
    model = _make("byol")
    ref = copy.deepcopy(model)
    out = model(views)
    with torch.no_grad():
        p = [ref.predictor(ref.projector(global_pool(ref.encoder(v)))).numpy() for v in views]
        z = [ref.target_projector(global_pool(ref.target_encoder(v))).numpy() for v in views]
    expected = sum(np.mean([2 - 2 * _cos(p[a][i], z[b][i]) for i in range(6)]) for a, b in ((0, 1), (1, 0)))
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def _local_outputs(ref: torch.nn.Module, views: list[torch.Tensor]) -> dict[str, list[np.ndarray]]:
    """Everything the CO references need, computed from a copy of the model's own heads."""
    co, b = ref.co, views[0].shape[0]

    def encode(enc: torch.nn.Module) -> list[torch.Tensor]:  # DINO encodes same-sized views together
        return list(enc(torch.cat(views)).chunk(len(views))) if ref.joint_views else [enc(v) for v in views]

    with torch.no_grad():
        f = encode(ref.encoder)
        ft = encode(ref.target_encoder) if ref.momentum else f
        z = [ref.projector(global_pool(x)) for x in f]
        q = [ref.predictor(x) for x in z] if ref.predictor is not None else z
        t = [ref.target_projector(global_pool(x)) for x in ft] if ref.momentum else z
        lq = [co.local_projector(_rows(x)) for x in f]
        if co.local_predictor is not None:
            lq = [co.local_predictor(x) for x in lq]
        lt_net = co.target_local_projector if ref.momentum else co.local_projector
        lt = [lt_net(_rows(x)) for x in ft] if lt_net is not None else lq  # (unused without a g2l term)
    shape = (b, -1)
    return {"q": [x.numpy() for x in q], "t": [x.numpy() for x in t],
            "lq": [x.reshape(*shape, x.shape[-1]).numpy() for x in lq],
            "lt": [x.reshape(*shape, x.shape[-1]).numpy() for x in lt]}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("base", BASES)
def test_co_term_matches_its_definition(base: str, direction: str) -> None:
    """L_l recomputed with loops from a copy of the model's own heads, position by position:
    L_l = pair_scale x mean over directions of the mean over view pairs."""
    views = _views(1)
    # both directions need the separate heads; the reference reads them
    model = _make(f"co_{base}", f"co.direction={direction}", "co.local_weight=0.4")
    if direction == "global_to_local" and model.momentum:
        model = _make(f"co_{base}", "co.direction=both", "co.local_weight=0.4")
        model.co.l2g = False  # the g2l term of the separate heads, checked on its own
        model.criterion.direction = "global_to_local"
    _perturb_targets(model)
    with torch.no_grad():  # non-zero centres, so that forgetting to centre would show
        for buf in (model.loss.center, model.criterion.local_base.center) if base == "dino" else ():
            buf.normal_(0, 0.3)
    ref = copy.deepcopy(model)
    centers = ((ref.loss.center.numpy().copy(), ref.criterion.local_base.center.numpy().copy()) if base == "dino"
               else (0, 0))
    out = model(views)
    r = _local_outputs(ref, views)
    l2g, g2l = co_terms(base, r["q"], r["t"], r["lq"], r["lt"], centers)
    terms = {"local_to_global": [l2g], "global_to_local": [g2l], "both": [l2g, g2l]}[direction]
    expected = model.loss.pair_scale * float(np.mean(terms))
    assert out.loss_local.item() == pytest.approx(expected, rel=1e-4)
    assert out.loss.item() == pytest.approx(0.6 * out.loss_global.item() + 0.4 * expected, rel=1e-4)


@pytest.mark.parametrize("name", ["byol", "co_byol", "dino", "co_dino", "mocov3", "co_mocov3"])
def test_multi_crop_pairs_every_view_with_every_other_global_view(name: str) -> None:
    """2 global + 2 small views: the target branch sees the global views only, and the loss is
    the pair-scaled mean over the 6 (query view, other global view) pairs."""
    model = _make(name)
    views = _views(5)[:2] + _views(6, size=8)
    assert len(view_pairs(4, 2)) == 6
    ref = copy.deepcopy(model)
    out = model(views)
    with torch.no_grad():
        online = ref.online(views)
        _, raw = ref.target_branch(views[:2])
        targets = ref.loss.targets(raw, 0.0)
        expected = ref.loss.pair_scale * np.mean([ref.loss.pair(online.queries[a], targets[b]).item()
                                                  for a, b in view_pairs(4, 2)])
    assert out.loss_global.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert model.encoder.backbone.net[0].weight.grad is not None


def test_simclr_refuses_multi_crop() -> None:
    model = _make("simclr")
    assert not model.loss.multi_crop


def test_dino_drops_the_last_layer_gradient_in_its_first_epoch() -> None:
    model = _make("co_dino", "method.dino.freeze_last_layer_epochs=1")
    first = model(_views(), 0.5).drop_grads
    last = (model.projector.last_layer.weight, model.co.local_projector.last_layer.weight)
    assert {id(p) for p in first} == {id(p) for p in last}
    assert model(_views(), 1.0).drop_grads == ()


def test_dino_teacher_temperature_warms_up_per_epoch_and_centre_is_an_ema() -> None:
    model = _make("dino", "method.dino.teacher_temp_warmup=0.02", "method.dino.teacher_temp=0.06",
                  "method.dino.teacher_temp_warmup_epochs=4", "method.dino.center_momentum=0.8")
    loss = model.loss
    # DINO: np.linspace(warmup, final, warmup_epochs) per whole epoch, then the final value
    expected = [*np.linspace(0.02, 0.06, 4), 0.06, 0.06]
    assert [loss.teacher_temp(e) for e in (0, 1, 2, 3, 4, 9)] == pytest.approx(expected)
    assert loss.teacher_temp(1.9) == pytest.approx(expected[1])
    raw = [torch.randn(5, 12), torch.randn(5, 12)]
    probs = loss.targets(raw, 1.0)
    torch.testing.assert_close(probs[0], torch.softmax(raw[0] / expected[1], dim=1))  # centre 0 before the update
    torch.testing.assert_close(loss.center, 0.2 * torch.cat(raw).mean(0))


def test_global_to_local_alone_targets_the_momentum_global_path_at_every_position() -> None:
    views = _views(8)
    model = _make("co_byol", "co.direction=global_to_local", "co.local_weight=0.5", "backbone.pool_mlp=true")
    _perturb_targets(model)
    ref = copy.deepcopy(model)
    out = model(views)
    with torch.no_grad():
        q = [ref.predictor(ref.projector(ref.encoder.pool(ref.encoder(v)))).numpy() for v in views]
        lt = [ref.target_projector(ref.target_encoder.head(_rows(ref.target_encoder(v)))).reshape(6, -1, 16).numpy()
              for v in views]
    p = lt[0].shape[1]
    expected = 2 * np.mean([np.mean([2 - 2 * _cos(q[a][i], lt[b][i, j]) for i in range(6) for j in range(p)])
                            for a, b in ((0, 1), (1, 0))])
    assert out.loss_local.item() == pytest.approx(expected, rel=1e-5)


def test_co_grid_pools_the_local_map() -> None:
    model = _make("co_byol", "co.grid=1", "co.local_weight=1.0", "co.direction=local_to_global")
    views = _views(3)
    ref = copy.deepcopy(model)
    out = model(views)
    with torch.no_grad():  # a 1x1 grid: the local representation is the global one
        f = [ref.encoder(v) for v in views]
        lq = [ref.co.local_predictor(ref.co.local_projector(global_pool(x))) for x in f]
        t = [ref.target_projector(global_pool(ref.target_encoder(v))) for v in views]
    expected = 2 * np.mean([np.mean([2 - 2 * _cos(lq[a][i].numpy(), t[b][i].numpy()) for i in range(6)])
                            for a, b in ((0, 1), (1, 0))])
    assert out.loss_local.item() == pytest.approx(expected, rel=1e-5)


def _make_with_pool_mlp(name: str, *extra: str) -> torch.nn.Module:
    cfg = load_config(None, [*SMALL, f"method.name={name}", *extra])
    torch.manual_seed(0)
    return build_method(cfg, Encoder(TinyConvNet(), MEAN, STD, head=PoolMLP(16, 24)))


def _bn_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()
            if not n.startswith("co.") and any(k in n for k in ("running_", "num_batches"))}


@pytest.mark.parametrize("base", BASES)
def test_shared_heads_leave_the_global_running_statistics_alone(base: str) -> None:
    """With shared heads the pool MLP (and projector, predictor) also run on the B*h*w local rows;
    their running statistics, which every eval-mode use of the encoder normalises with, must stay
    those of the global rows: the same as the base method's on the same inputs."""
    plain = _make_with_pool_mlp(base)
    shared = _make_with_pool_mlp(f"co_{base}", "co.shared_heads=true", "co.local_weight=0.5")
    for step in range(3):
        views = _views(10 + step)
        with torch.no_grad():
            plain(views), shared(views)
    a, b = _bn_buffers(plain), _bn_buffers(shared)
    assert a.keys() == b.keys() and any("encoder.head" in n for n in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    # and the local rows were still normalised with their own batch statistics (train mode)
    assert all(m.track_running_stats for m in shared.modules() if isinstance(m, torch.nn.BatchNorm1d))


@pytest.mark.parametrize("base", BASES)
def test_global_head_targets_put_the_global_path_at_every_position(base: str) -> None:
    """co.local_targets=global_heads: the global-to-local targets are the target side's global path
    (momentum pool MLP and projector; SimCLR's online ones) at every position; no momentum local
    projector is built, and the logged cosine between local and global targets is that of a
    direct computation."""
    views = _views(5)
    model = _make_with_pool_mlp(f"co_{base}", "co.local_targets=global_heads", "co.local_weight=0.5")
    assert model.co.target_local_projector is None and model.co.local_projector is not None
    _perturb_targets(model)
    ref = copy.deepcopy(model)
    out = model(views)
    enc = ref.target_encoder if ref.momentum else ref.encoder
    proj = ref.target_projector if ref.momentum else ref.projector
    with torch.no_grad():
        maps = list(enc(torch.cat(views)).chunk(2)) if ref.joint_views else [enc(v) for v in views]
        glob = [proj(x) for x in torch.cat([enc.pool(m) for m in maps]).chunk(2)] if ref.joint_views \
            else [proj(enc.pool(m)) for m in maps]
        local = [proj(enc.head(_rows(m))).reshape(6, -1, glob[0].shape[-1]) for m in maps]
    cos = np.mean([_cos(local[v][i, j].numpy(), glob[v][i].numpy())
                   for v in range(2) for i in range(6) for j in range(local[v].shape[1])])
    assert out.metrics["co_target_cos"].item() == pytest.approx(cos, rel=1e-4, abs=1e-6)
    # the separate heads' targets live in a space of their own: near-orthogonal at initialisation
    separate = _make_with_pool_mlp(f"co_{base}", "co.local_weight=0.5")(views).metrics["co_target_cos"].item()
    assert abs(separate) < cos


@pytest.mark.parametrize("crops", [0, 2])
@pytest.mark.parametrize("name", ["dino", "co_dino", "byol", "co_mocov3"])
def test_dino_normalises_each_resolution_over_its_concatenated_crops(name: str, crops: int) -> None:
    """DINO (as its multi-crop wrapper) puts the 2B global crops through the student together, the
    small crops together, and the teacher over the 2B global crops; BYOL and MoCo-v3 encode each
    view alone, as their references."""
    model = _make(name, "co.local_weight=0.5")
    seen: list[tuple[str, int]] = []
    for side, enc in (("student", model.encoder), ("teacher", model.target_encoder)):
        enc.backbone.net[1].register_forward_hook(lambda m, i, o, side=side: seen.append((side, i[0].shape[0])))
    views = _views(2, b=6) + [torch.rand(6, 3, 8, 8) for _ in range(crops)]
    out = model(views)
    if model.joint_views:
        expected = [("student", 12)] + [("student", 6 * crops)] * bool(crops) + [("teacher", 12)]
        # and the feature maps are those of the concatenation, split back per view
        with torch.no_grad():
            ref = copy.deepcopy(model)
            fmaps = ref.encoder(torch.cat(views[:2]))
        torch.testing.assert_close(model.online(views).fmaps[1], fmaps[6:])
    else:
        expected = [("student", 6)] * (2 + crops) + [("teacher", 6)] * 2
    assert seen[:len(expected)] == expected
    assert torch.isfinite(out.loss)


def test_dino_head_and_softmaxes_stay_fp32_under_bf16_autocast() -> None:
    """The cosine logits are divided by 0.04-0.1: bf16's spacing there would be ~0.1 logit units."""
    from cossl_train.heads import DINOHead
    from cossl_train.losses import dino_cross_entropy, teacher_probabilities

    torch.manual_seed(0)
    head = DINOHead(16, 32, 8, 64)
    x = torch.randn(5, 16)
    ref = head(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
        probs = teacher_probabilities(out, torch.zeros(64), 0.04)
        ce = dino_cross_entropy(out.to(torch.bfloat16), probs, 0.1)
    assert out.dtype == probs.dtype == ce.dtype == torch.float32
    # only the MLP ran in bf16: the logits agree with fp32 far better than bf16's own spacing
    assert (out - ref).abs().max() < 0.02 and out.sub(ref).abs().max() > 0
