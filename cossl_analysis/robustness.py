"""Accuracy cells: clean, corrupted, attacked and internally corrupted images, computed one by one
and kept in a :class:`~cossl_analysis.store.CellStore` so that a rerun skips finished ones.

A *cell* is one accuracy: one checkpoint, one sweep, one setting, one level, e.g.
(CO-BYOL, corruption, ``gaussian_noise``, severity 3). Every cell is the top-1 accuracy of the
checkpoint's frozen encoder + pooling (its head included) + linear probe, in eval mode, on the
labelled evaluation set, images in [0, 1] pixel space (normalisation lives inside the encoder):

* ``clean``: no corruption (always computed; the reference of the other sweeps).
* ``corruption``: ImageNet-C corruptions of ``imagecorruptions`` (``cossl_analysis.corruptions``)
  at severities 1-5. A corrupted set is made once per (corruption, severity), shared by every
  checkpoint, and cached on disk.
* ``adversarial``: FGSM and PGD (L-inf) from ``torchattacks`` at budgets given in /255 units
  (``cossl_analysis.adversarial``).
* ``internal``: noise, zeroing or masking of an intermediate feature map
  (``cossl_analysis.internal_corruption``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.accuracy import classifier_accuracy
from cossl_analysis.adversarial import attack_accuracy
from cossl_analysis.corruptions import corrupt_batch
from cossl_analysis.errors import AnalysisError
from cossl_analysis.internal_corruption import corrupted
from cossl_analysis.loading import EvalSet, Model
from cossl_analysis.options import AnalysisOptions
from cossl_analysis.store import CellStore

__all__ = ["Cell", "SweepResult", "check_dependencies", "compute_cell", "plan_cells", "resolve_layer", "run_cells"]

#: the intermediate map of ``layer="auto"``: the last-but-one stage of the ResNet-style backbones
AUTO_LAYER = "backbone.layer3"


def resolve_layer(encoder: nn.Module, layer: str) -> str:
    """The submodule name that ``layer`` means for ``encoder`` (``auto``: ``backbone.layer3`` when the
    encoder has it, else "" = the final feature map); one-line error for a name it does not have."""
    names = [n for n, _ in encoder.named_modules()]
    if layer == "auto":
        return AUTO_LAYER if AUTO_LAYER in names else ""
    if layer not in names:
        shallow = [n for n in names if n and n.count(".") <= 1]
        hint = ", ".join(["'' (the output)", *shallow[:12]]) + (", ..." if len(shallow) > 12 else "")
        raise AnalysisError(f"the encoder has no module {layer!r} (--layer); names include {hint}")
    return layer


@dataclass(frozen=True)
class Cell:
    """One setting of one sweep. ``level``: severity, eps (/255) or strength; None for ``clean``."""

    sweep: str
    setting: str
    level: float | None = None

    def key(self, model: Model, data: EvalSet, opts: AnalysisOptions) -> str:
        """Everything the accuracy depends on; readable after the two hashes. Internal strength 0 and
        budget 0 change nothing: they are the clean cell (computed once)."""
        if self.sweep in ("internal", "adversarial") and self.level == 0:
            return Cell("clean", "clean").key(model, data, opts)
        if self.sweep == "corruption":
            extra = f"seed={opts.seed},min_size={opts.min_size}"
        elif self.sweep == "adversarial":
            # PGD's step size is 2.5 eps / steps (cossl_analysis.adversarial.default_alpha)
            extra = f"seed={opts.seed}" + (f",steps={opts.pgd_steps}" if self.setting == "pgd" else "")
        elif self.sweep == "internal":
            extra = f"seed={opts.seed},module={resolve_layer(model.encoder, opts.layer)},bs={opts.batch_size}"
        else:
            extra = ""
        level = "" if self.level is None else repr(float(self.level))
        return f"{model.fingerprint}/{data.fingerprint}/accuracy/{self.sweep}/{self.setting}/{level}/{extra}"

    def columns(self) -> dict[str, Any]:
        """The long-format columns that place this cell (severity / eps_255 / strength)."""
        return {
            "severity": int(self.level) if self.sweep == "corruption" and self.level is not None else None,
            "eps_255": float(self.level) if self.sweep == "adversarial" and self.level is not None else None,
            "strength": float(self.level) if self.sweep == "internal" and self.level is not None else None,
        }


def plan_cells(opts: AnalysisOptions, sweeps: Sequence[str]) -> list[Cell]:
    """Every cell of a model for ``sweeps``, in the order they are computed: cheap sweeps first, so
    that a failing sweep shows up before hours of corruptions, and an interrupted run has them."""
    cells = [Cell("clean", "clean")]
    if "internal" in sweeps:
        cells += [Cell("internal", kind, float(s)) for kind in opts.internal_kinds for s in opts.strengths(kind)]
    if "adversarial" in sweeps:
        cells += [Cell("adversarial", attack, float(eps)) for attack in opts.attacks for eps in opts.eps_255]
    if "corruption" in sweeps:
        cells += [Cell("corruption", name, int(s)) for name in opts.corruptions for s in opts.severities]
    return cells


def compute_cell(model: Model, cell: Cell, data: EvalSet, opts: AnalysisOptions,
                 corrupted_images: Tensor | None = None) -> float:
    """The accuracy of ``model`` for ``cell``.

    ``corrupted_images``: the corrupted uint8 images of a ``corruption`` cell (made by the caller
    once per (corruption, severity) and shared by all models).
    """
    assert data.labels is not None  # require_probes checked it
    if cell.sweep == "clean":
        return classifier_accuracy(model.classifier, data.images, data.labels, opts.batch_size)
    if cell.sweep == "corruption":
        if corrupted_images is None:
            raise ValueError("a corruption cell needs the corrupted images")
        return classifier_accuracy(model.classifier, corrupted_images, data.labels, opts.batch_size)
    assert cell.level is not None
    if cell.sweep == "adversarial":
        return attack_accuracy(model.classifier, data.pixels, data.labels, attack=cell.setting,
                               eps=cell.level / 255, steps=opts.pgd_steps, batch_size=opts.batch_size,
                               seed=opts.seed)
    if cell.sweep == "internal":
        layer = resolve_layer(model.encoder, opts.layer)
        with corrupted(model.encoder, layer, cell.setting, cell.level, opts.seed):  # type: ignore[arg-type]
            return classifier_accuracy(model.classifier, data.images, data.labels, opts.batch_size)
    raise ValueError(f"unknown sweep {cell.sweep!r}")


@dataclass
class SweepResult:
    """The records of one run (one per model and cell, long format) and how they were obtained."""

    models: list[Model]
    data: EvalSet
    opts: AnalysisOptions
    records: list[dict[str, Any]]
    computed: int
    reused: int
    seconds: float


def check_dependencies(sweeps: Sequence[str]) -> None:
    """Fail in a second, with one line, rather than after the cheaper sweeps have run."""
    if "corruption" in sweeps:
        from cossl_analysis.corruptions import import_imagecorruptions

        import_imagecorruptions()
    if "adversarial" in sweeps:
        try:
            import torchattacks  # noqa: F401
        except ModuleNotFoundError as err:
            raise AnalysisError(f"the adversarial sweep needs torchattacks ({err}); install it with "
                                "`pip install --no-deps torchattacks==3.5.1` or leave it out with --sweeps") from None


def _corrupted_set(cell: Cell, data: EvalSet, opts: AnalysisOptions, memo: dict[str, Any]) -> Tensor:
    """The corrupted images of a corruption cell, made once and shared by the models that follow."""
    wanted = (cell.setting, int(cell.level or 0))
    if memo.get("for") != wanted:
        memo["images"] = corrupt_batch(data.images, cell.setting, wanted[1], seed=opts.seed, workers=opts.workers,
                                       cache_dir=opts.cache_dir, min_size=opts.min_size)
        memo["for"] = wanted
    return memo["images"]


def run_cells(models: Sequence[Model], data: EvalSet, opts: AnalysisOptions, store: CellStore,
              sweeps: Sequence[str], progress: bool = True) -> SweepResult:
    """Compute every cell of every model that ``store`` does not hold yet, storing each at once."""
    check_dependencies(sweeps)
    cells = plan_cells(opts, sweeps)
    keys = {(i, cell): cell.key(model, data, opts) for i, model in enumerate(models) for cell in cells}
    start, computed = time.perf_counter(), 0
    bar = tqdm(total=len(keys), desc="accuracy cells", unit="cell", disable=not progress, dynamic_ncols=True)
    memo: dict[str, Any] = {}
    try:
        for cell in cells:
            for i, model in enumerate(models):
                key = keys[(i, cell)]
                bar.update(1)
                if key in store:  # finished earlier, or by a model with identical weights
                    store.hits += 1
                    continue
                bar.set_postfix_str(f"{model.label}: {cell.sweep} {cell.setting} {cell.level or ''}", refresh=True)
                images = _corrupted_set(cell, data, opts, memo) if cell.sweep == "corruption" else None
                t0 = time.perf_counter()
                value = compute_cell(model, cell, data, opts, images)
                if not (isinstance(value, float) and 0.0 <= value <= 1.0):  # NaN fails too
                    raise RuntimeError(f"cell {key} gave accuracy {value!r}")
                store.put(key, {"accuracy": value, "n_images": len(data), "seconds": time.perf_counter() - t0,
                                "first_label": model.label, "first_checkpoint": str(model.path)})
                computed += 1
    finally:
        bar.close()
    records = [{"checkpoint": str(model.path), "label": model.label, "group": model.group, "method": model.method,
                "c_min": model.c_min, "sweep": cell.sweep, "setting": cell.setting, **cell.columns(),
                "accuracy": store.cells[keys[(i, cell)]]["accuracy"], "n_images": len(data)}
               for cell in cells for i, model in enumerate(models)]
    return SweepResult(list(models), data, opts, records, computed, len(keys) - computed,
                       time.perf_counter() - start)
