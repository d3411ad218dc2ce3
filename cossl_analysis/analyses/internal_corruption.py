"""Internal corruption: a forward hook replaces a submodule's output z by a corrupted copy at test
time (noise: z + s std(z_b) eps; zero: each unit zeroed with probability s; mask: each position
zeroed with probability s), and the probe's top-1 is measured against the strength s. The draws are
re-seeded for every strength, so what is zeroed at s is zeroed at any s' > s (docs/analysis.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.analyses._common import Data, check_model
from cossl_analysis.analyses.accuracy import probe_accuracy
from cossl_analysis.analyses.defaults import DEFAULT_STRENGTHS, KINDS

__all__ = ["DEFAULT_STRENGTHS", "KINDS", "STRENGTH_NAMES", "InternalCorruptionResult", "corrupt_features",
           "corrupted", "internal_corruption_sweep"]

CorruptionKind = Literal["noise", "zero", "mask"]
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
    """Return a corrupted copy of z (B, C, ...) (docs/analysis.md); strength 0 returns z as is."""
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


@dataclass
class InternalCorruptionResult:
    """Top-1 per strength of one kind at one module (``""``: the final feature map); ``chance`` is
    1 / classes when the probe is an ``nn.Linear``."""

    strengths: list[float]
    accuracy: list[float]
    kind: str
    module: str
    seed: int
    num_images: int | None
    chance: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InternalCorruptionResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


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
) -> InternalCorruptionResult:
    """Accuracy of encoder + pooling + probe with ``module_name``'s output corrupted.

    Args:
        model: images (B, 3, H, W) -> feature map (B, C, h, w).
        probe: linear probe on pooled (B, C) features.
        images: (B, 3, H, W) tensor with ``labels`` (B,), or an iterable of (images, labels) batches
            (iterated once per strength).
        module_name: dotted submodule name ("" = the final feature map), e.g. "backbone.layer3".
        kind: ``"noise"``, ``"zero"`` or ``"mask"`` (docs/analysis.md).
        strengths: values of s to sweep; defaults to ``DEFAULT_STRENGTHS[kind]``.
        seed: seed of the corruption draws (the same for every strength).
        batch_size: images per forward pass when ``images`` is a tensor.
        progress: tqdm bar over strengths.

    Returns:
        An :class:`InternalCorruptionResult`.
    """
    check_model(model, images)
    strengths = list(DEFAULT_STRENGTHS[kind] if strengths is None else strengths)
    for s in strengths:
        check_strength(kind, s)
    model.get_submodule(module_name)  # fail fast on a bad name, before any forward pass
    acc = []
    for s in tqdm(strengths, desc=f"internal {kind}", disable=not progress, leave=False):
        with corrupted(model, module_name, kind, s, seed):
            acc.append(probe_accuracy(model, probe, images, labels, batch_size))
    return InternalCorruptionResult(
        strengths=[float(s) for s in strengths],
        accuracy=acc,
        kind=kind,
        module=module_name,
        seed=seed,
        num_images=len(labels) if labels is not None else None,
        chance=1.0 / probe.out_features if isinstance(probe, nn.Linear) else None,
    )
