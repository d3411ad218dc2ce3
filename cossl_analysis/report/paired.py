"""Where two groups meet in a report: which groups are compared (a CO group with its base method's
group, CO-X against X; otherwise every group against the first), their seeds paired by
``train.seed`` (not by order), and per summary number the paired difference of
``cossl_train.paired`` (per seed, mean ± std, how many positive, the smallest difference the seeds
resolve, and a sentence saying which way it falls)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cossl_analysis.report.loading import Model
from cossl_analysis.report.setups import setup_distance
from cossl_train.paired import Paired, paired

__all__ = ["MARGINS", "Comparison", "Metric", "comparisons", "pair_seeds", "paired_rows"]

#: kind of number -> the difference too small to matter (docs/analysis.md, "Where groups meet")
MARGINS: dict[str, float] = {"accuracy": 1.0, "cosine": 0.02, "radius": 0.5}


@dataclass
class Metric:
    """One summary number of a section, per model (label -> value, None where it does not apply),
    in display units. ``n_images``: the number is one top-1 (%) on that many images, which carries
    a binomial error (shown beside a single seed). ``margin``: a difference too small to matter for
    this number (:data:`MARGINS`); a paired comparison says "no difference" only when its whole 95%
    interval lies within it, and never where it is None."""

    name: str
    values: dict[str, float | None]
    digits: int = 3
    n_images: int | None = None
    unit: str = ""
    margin: float | None = None


@dataclass
class Comparison:
    """Group ``a`` against group ``b``: the model pairs (same ``train.seed``) and what could not be paired."""

    a: str
    b: str
    pairs: list[tuple[Model, Model]]
    note: str = ""
    why: str = ""  #: "CO against its base method" or "against the first group"
    unpaired: list[str] = field(default_factory=list)


def _base_of(models: Sequence[Model]) -> str | None:
    """The base method of a group whose every model is one CO method (``co_byol`` -> ``byol``)."""
    names = {m.method_name for m in models}
    if len(names) != 1:
        return None
    (name,) = names
    return name[3:] if name is not None and name.startswith("co_") else None


def _method_of(models: Sequence[Model]) -> str | None:
    names = {m.method_name for m in models}
    return names.pop() if len(names) == 1 else None


def pair_seeds(a: Sequence[Model], b: Sequence[Model]) -> tuple[list[tuple[Model, Model]], str, list[str]]:
    """(pairs, note, unpaired labels): models of ``a`` and ``b`` with the same ``train.seed``.
    Groups whose seeds are unknown (external models) or repeated are paired by order, and the note
    says so; seeds found in one group only are left out, and the note names them."""
    seeds_a, seeds_b = [m.seed for m in a], [m.seed for m in b]
    known = None not in seeds_a and None not in seeds_b
    if not known or len(set(seeds_a)) < len(seeds_a) or len(set(seeds_b)) < len(seeds_b):
        n = min(len(a), len(b))
        why = "unknown for external models" if not known else "repeated within a group"
        note = f"paired by order, as the seeds are {why}"
        if len(a) != len(b):
            note += f"; {abs(len(a) - len(b))} model(s) of the larger group left out"
        left = [m.label for m in (list(a[n:]) + list(b[n:]))]
        return list(zip(a[:n], b[:n], strict=True)), note, left
    by_seed = {m.seed: m for m in b}
    pairs = sorted(((m, by_seed[m.seed]) for m in a if m.seed in by_seed), key=lambda pair: pair[0].seed)
    only_a = [m for m in a if m.seed not in by_seed]
    only_b = [m for m in b if m.seed not in {x.seed for x in a}]
    note = ""
    if only_a or only_b:
        parts = [f"seed(s) {', '.join(str(m.seed) for m in ms)} only in {g}"
                 for ms, g in ((only_a, a[0].group), (only_b, b[0].group)) if ms]
        note = "seeds do not match: " + "; ".join(parts) + " (left out)"
    return pairs, note, [m.label for m in only_a + only_b]


def comparisons(groups: Mapping[str, Sequence[Model]]) -> list[Comparison]:
    """CO-X against X for every CO group whose base method's group is present (of several X groups,
    the one trained with the fewest other settings changed, the first among equals); every other
    group against the first (groups already compared are not compared again)."""
    names = list(groups)
    out: list[Comparison] = []
    done: set[str] = set()
    for g in names:
        base = _base_of(groups[g])
        candidates = [h for h in names if h != g and base is not None and _method_of(groups[h]) == base]
        partner = min(candidates, key=lambda h: setup_distance(groups[g], groups[h]), default=None)
        if partner is not None:
            pairs, note, left = pair_seeds(groups[g], groups[partner])
            out.append(Comparison(g, partner, pairs, note, "CO against its base method", left))
            done.update((g, partner))
    first = names[0] if names else None
    for g in names[1:]:
        if g not in done:
            assert first is not None
            pairs, note, left = pair_seeds(groups[g], groups[first])
            out.append(Comparison(g, first, pairs, note, "against the first group", left))
    return out


def paired_of(metric: Metric, comparison: Comparison) -> tuple[Paired, list[str]] | None:
    """(the paired difference a - b of ``metric``, the seed of each pair) over the comparison's
    pairs where both values exist; None when no pair has both."""
    va, vb, seeds = [], [], []
    for ma, mb in comparison.pairs:
        x, y = metric.values.get(ma.label), metric.values.get(mb.label)
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            continue
        va.append(x)
        vb.append(y)
        seeds.append(str(ma.seed) if ma.seed is not None and ma.seed == mb.seed else f"{ma.label} / {mb.label}")
    if not va:
        return None
    return paired(comparison.a, comparison.b, metric.name, va, vb, metric.unit, metric.margin), seeds


def paired_rows(metrics: Sequence[Metric], found: Sequence[Comparison]) -> list[dict[str, object]]:
    """One record per (metric, comparison): the numbers and the sentence (report tables, manifest;
    ``resolvable`` is None for a single pair, where nothing can be resolved)."""
    rows: list[dict[str, object]] = []
    for metric in metrics:
        for c in found:
            got = paired_of(metric, c)
            if got is None:
                continue
            p, seeds = got
            per_seed = ", ".join(f"{s}: {d:+.{metric.digits}f}" for s, d in zip(seeds, p.diffs, strict=True))
            rows.append({"metric": metric.name, "a": c.a, "b": c.b, "why": c.why, "seeds": seeds,
                         "diffs": list(p.diffs), "per_seed": per_seed, "mean": p.mean, "std": p.std,
                         "positive": p.positive, "n": p.n,
                         "resolvable": None if math.isinf(p.resolvable) else p.resolvable,
                         "summary": p.summary(metric.digits), "sentence": p.sentence(metric.digits),
                         "which_way": p.verdict(metric.digits), "margin": metric.margin, "note": c.note})
    return rows
