"""The robustness sweeps, point by point: one top-1 of one checkpoint (encoder + pooling + probe,
eval mode, [0, 1] pixels) at one setting of one sweep: ``clean``, ``corruption`` (name, severity),
``adversarial`` (attack, budget /255) or ``internal_corruption`` (kind, strength). Computed one by
one, cheap sweeps first, each stored at once, so a rerun or a resumed run skips the finished ones."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.analyses.accuracy import classifier_accuracy
from cossl_analysis.analyses.adversarial import attack_accuracy
from cossl_analysis.analyses.corruption import corrupt_batch
from cossl_analysis.analyses.internal_corruption import corrupted
from cossl_analysis.config import AnalysisConfig
from cossl_analysis.errors import AnalysisError
from cossl_analysis.report.loading import PROBE_KINDS, EvalSet, Model
from cossl_analysis.report.store import ResultStore
from cossl_train.atomic import atomic_write_text

if TYPE_CHECKING:
    from cossl_analysis.report.session import Session

__all__ = ["SweepPoint", "SweepResult", "accuracy_of", "check_dependencies", "clean_accuracy", "compute_point",
           "plan_points", "resolve_layer", "run_sweeps", "session_sweeps"]

#: the intermediate map of ``layer="auto"``: the last-but-one stage of a ResNet, in a cossl encoder
#: (its own backbone, or a torchvision / timm one) and in an external one
AUTO_LAYERS = ("backbone.layer3", "net.layer3", "backbone.net.layer3")
AUTO_LAYER = AUTO_LAYERS[0]


def _last_but_one_block(names: list[str]) -> str:
    """A transformer's last-but-one block (its only block when it has one): ``...blocks.N``."""
    found = [(m.group(1), int(m.group(2))) for n in names if (m := re.fullmatch(r"(.*blocks)\.(\d+)", n))]
    if not found:
        return ""
    prefix = found[0][0]
    last = max(i for p, i in found if p == prefix)
    return f"{prefix}.{max(0, last - 1)}"


def resolve_layer(encoder: nn.Module, layer: str) -> str:
    """The submodule name that ``layer`` means for ``encoder`` (``auto``: the first of
    :data:`AUTO_LAYERS` the encoder has, else a transformer's last-but-one block, else "" = the
    final feature map); one-line error for a name it does not have."""
    names = [n for n, _ in encoder.named_modules()]
    if layer == "auto":
        return next((n for n in AUTO_LAYERS if n in names), None) or _last_but_one_block(names)
    if layer not in names:
        shallow = [n for n in names if n and n.count(".") <= 1]
        hint = ", ".join(["'' (the output)", *shallow[:12]]) + (", ..." if len(shallow) > 12 else "")
        raise AnalysisError(f"the encoder has no module {layer!r} (internal_corruption.layer); names include {hint}")
    return layer


@dataclass(frozen=True)
class SweepPoint:
    """One setting of one sweep. ``level``: severity, eps (/255) or strength; None for ``clean``."""

    sweep: str
    setting: str
    level: float | None = None

    def key(self, model: Model, data: EvalSet, cfg: AnalysisConfig) -> str:
        """Everything the accuracy depends on; readable after the two hashes. Internal strength 0 and
        budget 0 change nothing: they are the clean point (computed once)."""
        if self.sweep in ("internal_corruption", "adversarial") and self.level == 0:
            return SweepPoint("clean", "clean").key(model, data, cfg)
        if self.sweep == "corruption":
            extra = f"seed={cfg.seed},min_size={cfg.robustness.min_size}"
        elif self.sweep == "adversarial":
            # PGD's step size is 2.5 eps / steps (analyses.adversarial.default_alpha)
            extra = f"seed={cfg.seed}" + (f",steps={cfg.robustness.pgd_steps}" if self.setting == "pgd" else "")
        elif self.sweep == "internal_corruption":
            layer = resolve_layer(model.encoder, cfg.internal_corruption.layer)
            extra = f"seed={cfg.seed},module={layer},bs={cfg.batch_size}"
        else:
            extra = ""
        level = "" if self.level is None else repr(float(self.level))
        return f"{model.fingerprint}/{data.fingerprint}/accuracy/{self.sweep}/{self.setting}/{level}/{extra}"

    def columns(self) -> dict[str, Any]:
        """The long-format columns that place this point (severity / eps_255 / strength)."""
        return {
            "severity": int(self.level) if self.sweep == "corruption" and self.level is not None else None,
            "eps_255": float(self.level) if self.sweep == "adversarial" and self.level is not None else None,
            "strength": float(self.level) if self.sweep == "internal_corruption" and self.level is not None else None,
        }


def plan_points(cfg: AnalysisConfig, sweeps: Sequence[str]) -> list[SweepPoint]:
    """Every point of a model for ``sweeps``, in the order they are computed: cheap sweeps first, so
    that a failing sweep shows up before hours of corruptions, and an interrupted run has them."""
    internal, rob = cfg.internal_corruption, cfg.robustness
    points = [SweepPoint("clean", "clean")]
    if "internal_corruption" in sweeps:
        points += [SweepPoint("internal_corruption", kind, float(s)) for kind in internal.kinds
                  for s in internal.strengths_of(kind)]
    if "adversarial" in sweeps:
        points += [SweepPoint("adversarial", attack, float(eps)) for attack in rob.attacks for eps in rob.eps]
    if "corruption" in sweeps:
        points += [SweepPoint("corruption", name, int(s)) for name in rob.corruptions for s in rob.severities]
    return points


def compute_point(model: Model, point: SweepPoint, data: EvalSet, cfg: AnalysisConfig,
                 corrupted_images: Tensor | None = None) -> float:
    """The accuracy of ``model`` for ``point``.

    ``corrupted_images``: the corrupted uint8 images of a ``corruption`` point (made by the caller
    once per (corruption, severity) and shared by all models).
    """
    assert data.labels is not None  # require_probes checked it
    bs = cfg.batch_size
    if point.sweep == "clean":
        return classifier_accuracy(model.classifier, data.images, data.labels, bs)
    if point.sweep == "corruption":
        if corrupted_images is None:
            raise ValueError("a corruption point needs the corrupted images")
        return classifier_accuracy(model.classifier, corrupted_images, data.labels, bs)
    assert point.level is not None
    if point.sweep == "adversarial":
        return attack_accuracy(model.classifier, data.pixels, data.labels, attack=point.setting,
                               eps=point.level / 255, steps=cfg.robustness.pgd_steps, batch_size=bs, seed=cfg.seed)
    if point.sweep == "internal_corruption":
        layer = resolve_layer(model.encoder, cfg.internal_corruption.layer)
        with corrupted(model.encoder, layer, point.setting, point.level, cfg.seed):  # type: ignore[arg-type]
            return classifier_accuracy(model.classifier, data.images, data.labels, bs)
    raise ValueError(f"unknown sweep {point.sweep!r}")


@dataclass
class SweepResult:
    """The records of one run (one per model and point, long format) and how they were obtained."""

    models: list[Model]
    data: EvalSet
    config: AnalysisConfig
    records: list[dict[str, Any]]
    computed: int
    reused: int
    seconds: float


def check_dependencies(sweeps: Sequence[str]) -> None:
    """Fail in a second, with one line, rather than after the cheaper sweeps have run."""
    if "corruption" in sweeps:
        from cossl_analysis.analyses.corruption import import_imagecorruptions

        import_imagecorruptions()
    if "adversarial" in sweeps:
        try:
            import torchattacks  # noqa: F401
        except ModuleNotFoundError as err:
            raise AnalysisError(f"the adversarial sweep needs torchattacks ({err}); install it with "
                                "`pip install --no-deps torchattacks==3.5.1` or leave it out with "
                                "robustness.sweeps") from None


def _corrupted_set(point: SweepPoint, data: EvalSet, cfg: AnalysisConfig, memo: dict[str, Any]) -> Tensor:
    """The corrupted images of a corruption point, made once and shared by the models that follow."""
    wanted = (point.setting, int(point.level or 0))
    rob = cfg.robustness
    if memo.get("for") != wanted:
        memo["images"] = corrupt_batch(data.images, point.setting, wanted[1], seed=cfg.seed, workers=rob.workers,
                                       cache_dir=rob.cache_dir, min_size=rob.min_size)
        memo["for"] = wanted
    return memo["images"]


def run_sweeps(models: Sequence[Model], data: EvalSet, cfg: AnalysisConfig, store: ResultStore,
              sweeps: Sequence[str], progress: bool = True) -> SweepResult:
    """Compute every point of every model that ``store`` does not hold yet, storing each at once."""
    check_dependencies(sweeps)
    points = plan_points(cfg, sweeps)
    keys = {(i, point): point.key(model, data, cfg) for i, model in enumerate(models) for point in points}
    start, computed = time.perf_counter(), 0
    bar = tqdm(total=len(keys), desc="accuracies", unit="accuracy", disable=not progress, dynamic_ncols=True)
    memo: dict[str, Any] = {}
    try:
        for point in points:
            for i, model in enumerate(models):
                key = keys[(i, point)]
                bar.update(1)
                if key in store:  # finished earlier, or by a model with identical weights
                    store.note_hit(key)
                    continue
                bar.set_postfix_str(f"{model.label}: {point.sweep} {point.setting} {point.level or ''}", refresh=True)
                images = _corrupted_set(point, data, cfg, memo) if point.sweep == "corruption" else None
                t0 = time.perf_counter()
                value = compute_point(model, point, data, cfg, images)
                if not (isinstance(value, float) and 0.0 <= value <= 1.0):  # NaN fails too
                    raise RuntimeError(f"point {key} gave accuracy {value!r}")
                store.put(key, {"accuracy": value, "n_images": len(data), "seconds": time.perf_counter() - t0,
                                "first_label": model.label, "first_checkpoint": model.source})
                computed += 1
    finally:
        bar.close()
    records = [{"checkpoint": model.source, "label": model.label, "group": model.group, "method": model.method,
                "c_min": model.c_min, "probe": PROBE_KINDS[model.probe_kind], "sweep": point.sweep,
                "setting": point.setting, **point.columns(), "accuracy": store.records[keys[(i, point)]]["accuracy"],
                "n_images": len(data)}
               for point in points for i, model in enumerate(models)]
    return SweepResult(list(models), data, cfg, records, computed, len(keys) - computed,
                       time.perf_counter() - start)


# The robustness.csv columns: every accuracy point of the run, long format
CSV_COLUMNS = ("checkpoint", "label", "group", "method", "c_min", "probe", "sweep", "setting", "severity",
               "eps_255", "strength", "accuracy", "n_images")


def session_sweeps(session: Session, sweeps: Sequence[str]) -> SweepResult:
    """The accuracy points of ``sweeps`` (from the store, or computed), and ``robustness/robustness.csv``
    rewritten with every point this run has seen so far."""
    result = run_sweeps(session.models, session.data, session.config, session.store, sweeps, session.progress)
    for r in result.records:
        session.accuracy_records[(r["label"], r["sweep"], r["setting"], r["severity"], r["eps_255"], r["strength"])] = r
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rec in session.accuracy_records.values():
        writer.writerow({k: ("" if rec.get(k) is None else rec[k]) for k in CSV_COLUMNS})
    atomic_write_text(session.path("robustness", "robustness.csv"), buffer.getvalue())
    return result


def accuracy_of(result: SweepResult) -> Callable[..., float]:
    """``get(label, sweep, setting, severity=, eps=, strength=)``: the accuracy of one point."""
    table = {(r["label"], r["sweep"], r["setting"], r["severity"], r["eps_255"], r["strength"]): r["accuracy"]
             for r in result.records}

    def get(label: str, sweep: str, setting: str, severity: int | None = None, eps: float | None = None,
            strength: float | None = None) -> float:
        return table[(label, sweep, setting, severity, eps, strength)]

    return get


def clean_accuracy(session: Session) -> dict[str, float]:
    """Label -> clean top-1 (a point of the store)."""
    get = accuracy_of(session_sweeps(session, ()))
    return {m.label: get(m.label, "clean", "clean") for m in session.models}
