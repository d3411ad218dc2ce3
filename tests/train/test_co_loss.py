"""The drop-in CO parts: CoLoss on given tensors against loop-by-loop definitions, the trainer's
loss against the same parts assembled as one's own loop would, w_s = 0, PerPosition's BatchNorm
rule, and one-line errors for bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import METHOD_OVERRIDES, TinyConvNet, perturb_targets
from loss_reference import DINO_STUDENT_T, DINO_TEACHER_T, MOCO_T, PAIR_SCALE, SIMCLR_T, co_terms, global_loss
from torch import nn

from cossl_train import MLP, BYOLLoss, CoLoss, DINOLoss, MoCoV3Loss, PerPosition, SimCLRLoss
from cossl_train.config import load_config
from cossl_train.encoder import Encoder
from cossl_train.errors import InputError
from cossl_train.methods import build_method

BASES = ["byol", "simclr", "mocov3", "dino"]
DIRECTIONS = ["local_to_global", "global_to_local", "both"]
B, P, D = 5, 4, 12


def _base_loss(base: str) -> nn.Module:
    return {"byol": lambda: BYOLLoss(), "simclr": lambda: SimCLRLoss(SIMCLR_T), "mocov3": lambda: MoCoV3Loss(MOCO_T),
            "dino": lambda: DINOLoss(D, DINO_STUDENT_T, DINO_TEACHER_T)}[base]()


def _tensors(seed: int = 0) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {"q": [torch.randn(B, D, generator=g) for _ in range(2)],
            "t": [torch.randn(B, D, generator=g) for _ in range(2)],
            "lq": [torch.randn(B, P, D, generator=g) for _ in range(2)],
            "lt": [torch.randn(B, P, D, generator=g) for _ in range(2)]}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("base", BASES)
def test_co_loss_equals_its_definition_on_given_tensors(base: str, direction: str) -> None:
    x = _tensors()
    criterion = _base_loss(base)
    loss = CoLoss(criterion, local_weight=0.35, direction=direction)
    centers = (0.0, 0.0)
    if base == "dino":  # non-zero centres, so that forgetting to centre would show
        with torch.no_grad():
            loss.base.center.normal_(0, 0.3)
            loss.local_base.center.normal_(0, 0.3)
        centers = (loss.base.center.numpy().copy(), loss.local_base.center.numpy().copy())
    simclr = base == "simclr"  # no target branch: the queries are the targets, the local embeddings too
    targets = None if simclr else x["t"]
    local_targets = None if simclr else x["lt"]
    out = loss(x["q"], targets, x["lq"], local_targets)

    np_ = {k: [v.numpy() for v in vs] for k, vs in x.items()}
    t = np_["q"] if simclr else np_["t"]
    lt = np_["lq"] if simclr else np_["lt"]
    l2g, g2l = co_terms(base, np_["q"], t, np_["lq"] if direction != "global_to_local" else None,
                        lt if direction != "local_to_global" else None, centers)
    terms = [v for v in (l2g, g2l) if v is not None]
    expected_local = PAIR_SCALE[base] * float(np.mean(terms))
    expected_global = global_loss(base, np_["q"], t, centers[0])
    assert out.local_loss.item() == pytest.approx(expected_local, rel=1e-5)
    assert out.global_loss.item() == pytest.approx(expected_global, rel=1e-5)
    assert out.loss.item() == pytest.approx(0.65 * expected_global + 0.35 * expected_local, rel=1e-5)
    assert ("co_target_cos" in out.metrics) == (direction != "local_to_global")


@pytest.mark.parametrize("base", BASES)
def test_zero_local_weight_is_the_base_loss_and_reads_no_local_input(base: str) -> None:
    x = _tensors(1)
    targets = None if base == "simclr" else x["t"]
    out = CoLoss(_base_loss(base), local_weight=0.0)(x["q"], targets)  # no local inputs at all
    plain = _base_loss(base)
    expected = plain.global_loss(x["q"], plain.targets(targets if targets is not None else x["q"], 0.0))
    assert torch.equal(out.loss, expected) and out.local_loss.item() == 0.0


def test_a_global_loss_of_ones_own_replaces_the_base_one() -> None:
    x = _tensors(3)
    co = CoLoss(BYOLLoss(), local_weight=0.25)
    own_global = torch.tensor(1.5)
    out = co(x["q"], x["t"], x["lq"], x["lt"], global_loss=own_global)
    reference = co(x["q"], x["t"], x["lq"], x["lt"])
    assert out.global_loss.item() == 1.5 and torch.equal(out.local_loss, reference.local_loss)
    assert out.loss.item() == pytest.approx(0.75 * 1.5 + 0.25 * reference.local_loss.item())
    with pytest.raises(InputError, match="global_loss has shape \\(2,\\): expected a scalar"):
        co(x["q"], x["t"], x["lq"], x["lt"], global_loss=torch.ones(2))


# -- the trainer's loss against the same parts assembled by hand ------------------------------------


def _method(name: str, direction: str) -> nn.Module:
    cfg = load_config(None, [*METHOD_OVERRIDES, f"method.name={name}", f"co.direction={direction}",
                             "co.local_weight=0.4"])
    torch.manual_seed(0)
    model = build_method(cfg, Encoder(TinyConvNet(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    perturb_targets(model)
    if name.endswith("dino"):  # non-zero centres, copied into the hand-built loss below
        with torch.no_grad():
            model.criterion.base.center.normal_(0, 0.3)
            model.criterion.local_base.center.normal_(0, 0.3)
    return model


def _own_loop_loss(m: nn.Module, base: str, direction: str, views: list[torch.Tensor]) -> torch.Tensor:
    """The CO loss as a loop of one's own computes it from the model's modules and the public parts:
    encoder -> spatial mean -> projector (-> predictor); PerPosition local heads; a fresh CoLoss."""
    enc = m.encoder
    if base == "dino":  # DINO's wrapper encodes the views of one size together (BatchNorm over 2B)
        fmaps = list(enc(torch.cat(views)).chunk(2))
        z = list(m.projector(torch.cat([f.mean((2, 3)) for f in fmaps])).chunk(2))
    else:
        fmaps = [enc(v) for v in views]
        z = [m.projector(f.mean((2, 3))) for f in fmaps]
    q = [m.predictor(x) for x in z] if m.predictor is not None else z
    targets = local_targets = local_queries = None
    if direction != "global_to_local" or base == "simclr":
        heads = nn.Sequential(*[h for h in (m.co.local_projector, m.co.local_predictor) if h is not None])
        local_queries = [PerPosition(heads)(f) for f in fmaps]
    if base != "simclr":
        with torch.no_grad():
            tenc = m.target_encoder
            tmaps = list(tenc(torch.cat(views)).chunk(2)) if base == "dino" else [tenc(v) for v in views]
            targets = ([m.target_projector(torch.cat([f.mean((2, 3)) for f in tmaps])).chunk(2)] if base == "dino"
                       else [[m.target_projector(f.mean((2, 3))) for f in tmaps]])[0]
            if direction == "global_to_local":  # a momentum method's g2l alone: the global path at every position
                local_targets = [PerPosition(m.target_projector, update_running_stats=False)(f) for f in tmaps]
            elif direction == "both":
                local_targets = [PerPosition(m.co.target_local_projector)(f) for f in tmaps]
    criterion = CoLoss(_base_loss(base) if base != "dino" else DINOLoss(m.projector.out_dim, DINO_STUDENT_T,
                                                                          DINO_TEACHER_T),
                       local_weight=0.4, direction=direction)
    if base == "dino":
        criterion.load_state_dict(m.criterion.state_dict())  # the centres
    return criterion(q, targets, local_queries, local_targets).loss


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("base", BASES)
def test_the_trainers_loss_is_the_drop_in_parts_on_the_same_batch(base: str, direction: str) -> None:
    """|trainer - own loop| <= 1e-6 in fp32, and the same gradient on the encoder."""
    model = _method(f"co_{base}", direction)
    mine = copy.deepcopy(model)
    g = torch.Generator().manual_seed(4)
    views = [torch.rand(6, 3, 16, 16, generator=g) for _ in range(2)]
    trainer = model(views).loss
    own = _own_loop_loss(mine, base, direction, views)
    assert abs(trainer.item() - own.item()) <= 1e-6
    trainer.backward()
    own.backward()
    for (name, p), (_, p2) in zip(model.encoder.named_parameters(), mine.encoder.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p2.grad, rtol=1e-5, atol=1e-7, msg=name)


# -- PerPosition -------------------------------------------------------------------------------------


def test_per_position_normalises_over_all_positions_of_all_images() -> None:
    torch.manual_seed(0)
    fmap = torch.randn(3, 6, 2, 5)
    head = MLP(6, 8, 4)
    out = PerPosition(head)(fmap)
    # the same head on the rows in (b, i, j) order, BatchNorm over all 30 rows
    rows = torch.stack([fmap[b, :, i, j] for b in range(3) for i in range(2) for j in range(5)])
    torch.testing.assert_close(out, copy.deepcopy(head)(rows).reshape(3, 10, 4))


def test_per_position_grid_pools_before_the_head() -> None:
    fmap = torch.randn(2, 6, 4, 4)
    head = nn.Linear(6, 3)
    out = PerPosition(head, grid=2)(fmap)
    pooled = fmap.reshape(2, 6, 2, 2, 2, 2).mean((3, 5))  # 2x2 blocks
    torch.testing.assert_close(out, head(pooled.permute(0, 2, 3, 1).reshape(2, 4, 6)))


@pytest.mark.parametrize("train", [True, False])
def test_global_heads_on_local_rows_use_the_rows_statistics_and_keep_their_own(train: bool) -> None:
    torch.manual_seed(0)
    head = MLP(6, 8, 4).train(train)
    with torch.no_grad():  # running statistics unlike the rows' own
        head.net[1].running_mean.fill_(3.0)
        head.net[1].running_var.fill_(9.0)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    fmap = torch.randn(4, 6, 3, 3)
    out = PerPosition(head, update_running_stats=False)(fmap)
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert head.training == train
    batch_stats = copy.deepcopy(head).train()  # train-mode BatchNorm: the batch's own statistics
    torch.testing.assert_close(out, batch_stats(fmap.permute(0, 2, 3, 1).reshape(-1, 6)).reshape(4, 9, 4))


# -- bad input ---------------------------------------------------------------------------------------


def _bad_calls() -> list[tuple[str, object]]:
    x = _tensors(2)
    byol = CoLoss(BYOLLoss(), 0.3)
    return [
        ("local_weight=1.5 must lie in \\[0, 1\\]", lambda: CoLoss(BYOLLoss(), local_weight=1.5)),
        ("direction='sideways'", lambda: CoLoss(BYOLLoss(), direction="sideways")),
        ("base must be a PairLoss", lambda: CoLoss(nn.MSELoss())),
        ("queries must be a list", lambda: byol(x["q"][0], x["t"])),
        ("queries\\[1\\] has 4 images, queries\\[0\\] has 5", lambda: byol([x["q"][0], x["q"][1][:4]], x["t"],
                                                                           x["lq"], x["lt"])),
        ("BYOLLoss needs targets", lambda: byol(x["q"], None, x["lq"], x["lt"])),
        ("local_queries\\[0\\] has shape \\(5, 12\\): expected \\(B, P, D\\).*pooled vector",
         lambda: byol(x["q"], x["t"], x["q"], x["lt"])),
        ("local_queries\\[0\\] has shape \\(5, 12, 2, 2\\).*PerPosition",
         lambda: byol(x["q"], x["t"], [torch.randn(5, 12, 2, 2)] * 2, x["lt"])),
        ("local_targets\\[1\\] has shape \\(5, 0, 12\\)", lambda: byol(x["q"], x["t"], x["lq"],
                                                                        [x["lt"][0], torch.randn(5, 0, 12)])),
        ("direction='both' needs local_queries", lambda: byol(x["q"], x["t"], None, x["lt"])),
        ("queries\\[0\\] has shape \\(5, 4, 12\\).*local embeddings go in", lambda: byol(x["lq"], x["t"])),
        ("feature map \\(B, C, h, w\\).*pooled vector", lambda: PerPosition(nn.Linear(12, 3))(x["q"][0])),
        ("no spatial positions", lambda: PerPosition(nn.Linear(12, 3))(torch.randn(2, 12, 0, 3))),
        ("temperature must be > 0", lambda: SimCLRLoss(0.0)),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_is_one_line_naming_what_was_given(case: int) -> None:
    match, call = _bad_calls()[case]
    with pytest.raises(InputError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_a_dino_checkpoint_of_the_earlier_layout_loads(tmp_path) -> None:  # noqa: ANN001
    """Earlier versions kept DINO's centres at ``loss.center`` and ``co.loss.center``."""
    from cossl_train.checkpoint import load_state

    model = _method("co_dino", "both")
    old = {{"criterion.base.center": "loss.center", "criterion.local_base.center": "co.loss.center"}.get(k, k): v
           for k, v in model.state_dict().items() if not k.startswith("criterion.") or k.endswith("center")}
    assert "loss.center" in old and "co.loss.center" in old
    fresh = _method("co_dino", "both")
    with torch.no_grad():
        fresh.criterion.base.center.zero_()
    load_state(fresh, old, tmp_path / "old.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
