"""Internal corruption: perturb an intermediate feature map at test time and measure probe accuracy.

A forward hook on a named submodule of the encoder replaces that submodule's output z (B, C, h, w)
by a corrupted copy; the rest of the network, the pooling (with the encoder's head) and the linear
probe run as usual, and top-1 accuracy is reported against the corruption strength s.

* ``kind="noise"``: z + s * std(z_b) * eps, eps ~ N(0, 1) i.i.d., where std(z_b) is the (population)
  standard deviation of sample b's whole output over all its units (channels x positions). Scaling
  per sample makes s a signal-to-noise knob that is comparable across layers and models.
* ``kind="zero"``: each unit (one channel at one position) is set to 0 independently with
  probability s, without rescaling the survivors (unlike dropout: the network never saw such
  corruption in training, which is the point). s = 1 zeroes the whole output.
* ``kind="mask"`` (internal masking): each *position* (all C channels of one of the h x w cells) is
  set to 0 independently with probability s: whole local representations disappear from the
  intermediate map, and the layers above must do without them.

The random generator is re-seeded with ``seed`` for every strength, so all strengths see the same
draws (common random numbers): for ``zero`` and ``mask`` what is zeroed at s is zeroed at any s' > s,
and the curve is smooth in s rather than reflecting new draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis._utils import Data, check_fmap, eval_mode, model_device, model_dtype, sibling, write_json
from cossl_analysis.accuracy import pixels, top1
from cossl_train.encoder import pool_features

CorruptionKind = Literal["noise", "zero", "mask"]
KINDS: tuple[str, ...] = ("noise", "zero", "mask")
DEFAULT_STRENGTHS: dict[str, tuple[float, ...]] = {
    "noise": (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    "zero": (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    "mask": (0.0, 0.1, 0.25, 0.5, 0.75, 0.9),
}
#: axis labels of the strength s of each kind
STRENGTH_NAMES: dict[str, str] = {
    "noise": "noise std / feature-map std",
    "zero": "fraction of units zeroed",
    "mask": "fraction of positions masked",
}


def check_strength(kind: str, strength: float) -> None:
    """ValueError unless ``strength`` is valid for ``kind`` (noise: >= 0; zero, mask: in [0, 1])."""
    if kind not in KINDS:
        raise ValueError(f"unknown corruption kind {kind!r}; valid: {', '.join(KINDS)}")
    if not strength >= 0 or (kind != "noise" and strength > 1):
        raise ValueError(f"invalid strength {strength} for {kind!r}")


def corrupt_features(
    z: Tensor, kind: CorruptionKind, strength: float, generator: torch.Generator | None = None
) -> Tensor:
    """Return a corrupted copy of z (B, C, ...) (see the module docstring); strength 0 returns z as is."""
    check_strength(kind, strength)
    if strength == 0:
        return z
    if kind == "noise":
        # Per-sample std over all units; detached: the scale is a constant of the corruption.
        std = z.detach().flatten(1).std(dim=1, correction=0).view(-1, *([1] * (z.dim() - 1)))
        eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return z + strength * std * eps
    # zero: one draw per unit; mask: one draw per position, shared by all channels
    shape = z.shape if kind == "zero" else (z.shape[0], 1, *z.shape[2:])
    u = torch.rand(shape, generator=generator, device=z.device)
    return z * (u >= strength).to(z.dtype)


@contextlib.contextmanager
def corrupted(
    model: nn.Module, module_name: str, kind: CorruptionKind, strength: float, seed: int = 0
) -> Iterator[nn.Module]:
    """Context in which ``model.get_submodule(module_name)`` outputs corrupted feature maps.

    ``module_name`` is a dotted name as in ``model.named_modules()`` ("" = the model itself, i.e.
    its final feature map). Yields the hooked submodule; the hook is removed on exit.
    """
    target = model.get_submodule(module_name)
    gens: dict[torch.device, torch.Generator] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(f"module {module_name!r} returns {type(output).__name__}, not a tensor")
        if output.device not in gens:  # generator on the output's device, seeded once per context
            gens[output.device] = torch.Generator(device=output.device).manual_seed(seed)
        return corrupt_features(output, kind, strength, gens[output.device])

    handle = target.register_forward_hook(hook)
    try:
        yield target
    finally:
        handle.remove()


def probe_accuracy(model: nn.Module, probe: nn.Module, images: Data, labels: Tensor | None = None,
                   batch_size: int = 64) -> float:
    """Top-1 accuracy of probe(pool_features(model, model(x))) in eval mode.

    Args:
        model: images (B, 3, H, W) -> feature map (B, C, h, w) (an ``Encoder`` pools with its head).
        probe: (B, C) -> (B, classes) logits.
        images: (B, 3, H, W) tensor with ``labels`` (B,), or an iterable of (images, labels) batches.
    """
    device, dtype = model_device(model), model_dtype(model)

    def logits(x: Tensor, _: Tensor) -> Tensor:
        return probe(pool_features(model, check_fmap(model(pixels(x, device, dtype)))))

    with eval_mode(model, probe), torch.no_grad():
        return top1(logits, images, labels, batch_size)


def internal_corruption_sweep(
    model: nn.Module,
    probe: nn.Module,
    images: Data,
    labels: Tensor | None = None,
    module_name: str = "",
    kind: CorruptionKind = "noise",
    strengths: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy of encoder + pooling + probe with ``module_name``'s output corrupted.

    Args:
        model: images (B, 3, H, W) -> feature map (B, C, h, w).
        probe: linear probe on pooled (B, C) features.
        images: (B, 3, H, W) tensor with ``labels`` (B,), or an iterable of (images, labels) batches
            (iterated once per strength).
        module_name: dotted submodule name ("" = the final feature map), e.g. "backbone.layer3".
        kind: ``"noise"``, ``"zero"`` or ``"mask"`` (module docstring).
        strengths: values of s to sweep; defaults to ``DEFAULT_STRENGTHS[kind]``.
        seed: seed of the corruption draws (the same for every strength).
        batch_size: images per forward pass when ``images`` is a tensor.
        progress: tqdm bar over strengths.

    Returns:
        Raw numbers: ``strengths``, ``accuracy`` (per strength), ``kind``, ``module``, ``seed``,
        ``num_images``, ``chance`` (1 / number of classes when the probe is an ``nn.Linear``).
    """
    strengths = list(DEFAULT_STRENGTHS[kind] if strengths is None else strengths)
    for s in strengths:
        check_strength(kind, s)
    model.get_submodule(module_name)  # fail fast on a bad name, before any forward pass
    acc = []
    for s in tqdm(strengths, desc=f"internal {kind}", disable=not progress, leave=False):
        with corrupted(model, module_name, kind, s, seed):
            acc.append(probe_accuracy(model, probe, images, labels, batch_size))
    return {
        "strengths": [float(s) for s in strengths],
        "accuracy": acc,
        "kind": kind,
        "module": module_name,
        "seed": seed,
        "num_images": len(labels) if labels is not None else None,
        "chance": 1.0 / probe.out_features if isinstance(probe, nn.Linear) else None,
    }


def plot_internal_corruption(results: Mapping[str, Any], path: str | Path) -> dict[str, dict[str, Any]]:
    """Plot accuracy against corruption strength; raw numbers to ``<path>.json``.

    Args:
        results: one dict from ``internal_corruption_sweep`` or {label: dict} for several models.
        path: PNG path.

    Returns:
        {label: raw numbers} as written to the JSON.
    """
    runs = {"model": dict(results)} if "strengths" in results else {k: dict(v) for k, v in results.items()}
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for k, (label, r) in enumerate(runs.items()):
        where = r["module"] or "output"
        ax.plot(r["strengths"], 100 * np.asarray(r["accuracy"]), marker="o", color=f"C{k % 10}",
                label=f"{label} ({r['kind']} @ {where})")
    chance = {r.get("chance") for r in runs.values()} - {None}
    if len(chance) == 1:
        ax.axhline(100 * chance.pop(), color="gray", linestyle=":", label="chance")
    kinds = {r["kind"] for r in runs.values()}
    ax.set_xlabel(STRENGTH_NAMES[kinds.pop()] if len(kinds) == 1 else "corruption strength")
    ax.set_ylabel("linear-probe top-1 accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    write_json(runs, sibling(path, ".json"))
    return runs
