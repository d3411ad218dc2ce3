"""Which models are seeds of one setup. Models that share a label are averaged as seeds only when they
are replicas: the same training config but for the settings in :data:`REPLICA_KEYS` (the seed, where
and how the run was logged) and the same epoch. Models under one label whose setups differ are told
apart into groups named by what differs (``CO-BYOL (augment.c_min=0.5)``), and the report says so.
The same comparison of setups pairs a sweep's CO group with the base group of its own combination
(:func:`setup_distance`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cossl_analysis.report.loading import Model

__all__ = ["REPLICA_KEYS", "differing_keys", "family_of", "setup_distance", "setup_names", "setup_of", "split_groups"]

#: training settings that replicas may differ in (prefixes end with "."): the seed, where the run was
#: written, how it logged and evaluated along the way, the device and the data loading workers, and the
#: offline evaluation recipe (``eval.*``, not part of pre-training)
REPLICA_KEYS = ("train.seed", "train.out_dir", "train.log_every", "train.tensorboard", "train.device",
                "train.knn_every", "train.probe_eval_every", "data.num_workers", "data.download", "eval.")
#: what a CO group and its base group may differ in besides :data:`REPLICA_KEYS`: the method's name
#: and the CO term's settings (a base method has none)
METHOD_KEYS = ("method.name", "co.")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in ignore)


def setup_of(model: Model, ignore: Sequence[str] = REPLICA_KEYS) -> dict[str, Any]:
    """What makes ``model`` the model it is, as flat ``key: value``: a checkpoint's training config
    (less ``ignore``) and epoch; an external model's spec without its weights file."""
    from cossl_train.config import to_dict

    cfg = getattr(model, "config", None)
    if cfg is None:
        return {"model": str(getattr(model, "spec", "")).partition("@")[0]}
    flat = {k: v for k, v in _flat(to_dict(cfg)).items() if not _ignored(k, ignore)}
    return {"model": "cossl checkpoint", **flat, "epoch": getattr(model, "epoch", None)}


def differing_keys(models: Sequence[Model], ignore: Sequence[str] = REPLICA_KEYS) -> list[str]:
    """The keys of :func:`setup_of` whose values are not the same for every model, in config order."""
    setups = [setup_of(m, ignore) for m in models]
    keys = list(dict.fromkeys(k for s in setups for k in s))
    return [k for k in keys if len({repr(s.get(k)) for s in setups}) > 1]


def setup_distance(a: Sequence[Model], b: Sequence[Model]) -> int:
    """How many training settings the first models of two groups differ in, besides the method's name,
    the CO term and what replicas may differ in: a sweep's CO group meets the base group of its own
    combination (a sweep over ``method.simclr.temperature`` counts)."""
    fa, fb = (setup_of(g[0], (*REPLICA_KEYS, *METHOD_KEYS)) for g in (a, b))
    return sum(fa.get(k) != fb.get(k) for k in fa.keys() | fb.keys())


def family_of(model: Model) -> str:
    """The label the model was given (or its method's display name): its group before setups were told apart."""
    return getattr(model, "family", "") or model.group


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def setup_names(models: Sequence[Model], ignore: Sequence[str] = REPLICA_KEYS) -> list[str]:
    """Per model: its label (``family``) and, where models of that label differ in setup, what sets its
    setup apart: ``"CO-BYOL (augment.c_min=0.5)"``; external models apart from checkpoints by their spec."""
    names = [family_of(m) for m in models]
    for family in dict.fromkeys(names):
        members = [i for i, m in enumerate(models) if family_of(m) == family]
        kinds = {models[i].is_external for i in members}
        trained = [i for i in members if not models[i].is_external]
        keys = [k for k in differing_keys([models[i] for i in trained], ignore) if k != "model"]
        for i in members:
            m = models[i]
            if m.is_external:
                parts = [setup_of(m)["model"]] if len(kinds) > 1 or len(
                    {setup_of(models[j])["model"] for j in members}) > 1 else []
            else:
                setup = setup_of(m, ignore)
                parts = (["cossl checkpoint"] if len(kinds) > 1 else []) + [f"{k}={_value(setup[k])}" for k in keys]
            if parts:
                names[i] = f"{family} ({', '.join(parts)})"
    return names


def split_groups(models: Sequence[Model]) -> tuple[list[Model], list[str]]:
    """(the models, each in the group of its own setup, with labels told apart within it again; a note
    per label whose models were split, naming what differs)."""
    from cossl_analysis.report.loading import unique_labels

    groups = setup_names(models)
    notes = []
    for family in dict.fromkeys(family_of(m) for m in models):
        split = sorted({g for g, m in zip(groups, models, strict=True) if family_of(m) == family})
        if len(split) > 1:
            notes.append(f"the models labelled {family!r} are not seeds of one setup, so they are shown as "
                         f"{len(split)} groups: {'; '.join(split)} (seeds may differ only in "
                         f"{', '.join(k.rstrip('.') + ('*' if k.endswith('.') else '') for k in REPLICA_KEYS)})")
    if not notes:
        return list(models), []
    items = [m.spec if m.is_external else m.pretrained for m in models]
    labels = unique_labels(groups, items)
    return [dataclasses.replace(m, group=g, label=lab, family=family_of(m))
            for m, g, lab in zip(models, groups, labels, strict=True)], notes
