"""Checkpoints as :class:`Model` s (a group: the label given, or the method's display name; a unique
label per seed), the evaluation images they are all analysed on (:func:`load_eval_set`), and image
files (:func:`load_images`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cossl_analysis.errors import AnalysisError
from cossl_train.checkpoint import CheckpointError, Pretrained, digest_weights, load_pretrained, probe_path
from cossl_train.config import Config
from cossl_train.encoder import pool_head
from cossl_train.evaluate import pixels
from cossl_train.methods import display_name
from cossl_train.trainer import CHECKPOINT_NAME

__all__ = [
    "CheckpointError",
    "PROBE_KINDS",
    "EvalSet",
    "Model",
    "Pretrained",
    "load_checkpoint",
    "load_eval_set",
    "load_images",
    "load_models",
    "unique_labels",
    "weights_fingerprint",
]

#: prefix of scikit-image sample photos in :func:`load_images` (``"skimage:astronaut"``)
SKIMAGE_PREFIX = "skimage:"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """A ready model (encoder in eval mode, probe if any, config) from a checkpoint file or run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise CheckpointError(f"{path} is a folder without a {CHECKPOINT_NAME}")
        path = path / CHECKPOINT_NAME
    return load_pretrained(path, device)


def weights_fingerprint(*modules: nn.Module | None) -> str:
    """Content hash (hex) of the modules' state dicts: equal weights, equal fingerprint."""
    digest = hashlib.blake2b(digest_size=16)
    for module in modules:
        digest.update(b"|none|" if module is None else b"|module|")
        if module is not None:
            digest_weights(digest, module)
    return digest.hexdigest()


#: what a probe is, whatever file it came from: probes of one kind are comparable
PROBE_KINDS = {"online": "online probe", "fast": "linear probe (fast protocol)",
               "standard": "linear probe (standard protocol)", "none": "none"}


@dataclass
class Model:
    """One model ready for the analyses: a cossl checkpoint or an external model (a spec).

    Attributes:
        label: unique display name (``group``, told apart from the other seeds of the group).
        group: the configuration it is a seed of (user label or method display name).
        spec: the model as given (a checkpoint path or a ``torchvision:``/``timm:``/``MODULE:`` spec).
        encoder: [0, 1] images -> feature map (an ``Encoder`` or an ``ExternalEncoder``).
        probe: the linear probe on the global representation, or None.
        probe_source: where the probe comes from, in words (for the report).
        probe_kind: a key of :data:`PROBE_KINDS` (online, fast, standard, none).
        pretrained: the loaded checkpoint (cossl checkpoints only; None for external models).
        probe_scores: what training a probe here measured (``probes.ensure_probes``), else None.
    """

    label: str
    group: str
    spec: str
    encoder: nn.Module
    probe: nn.Linear | None
    probe_source: str
    probe_kind: str
    pretrained: Pretrained | None = None
    #: scores of a probe trained by this package (probe_top1, knn_top1 on the full evaluation split, n_val)
    probe_scores: dict[str, float] | None = None
    #: the label given, where models under it were told apart by setup (``report.setups``); "" = ``group``
    family: str = ""

    @property
    def is_external(self) -> bool:
        return self.pretrained is None

    @property
    def source(self) -> str:
        """The checkpoint file, or the spec of an external model (for messages and tables)."""
        return self.spec if self.pretrained is None else str(self.pretrained.path)

    @property
    def path(self) -> Path | None:
        """The checkpoint file (None for an external model)."""
        return None if self.pretrained is None else self.pretrained.path

    @property
    def config(self) -> Config | None:
        """The checkpoint's config (None for an external model)."""
        return None if self.pretrained is None else self.pretrained.config

    @property
    def method(self) -> str:
        return "external model" if self.pretrained is None else display_name(self.pretrained.config.method.name)

    @property
    def method_name(self) -> str | None:
        """The config's method name (``co_byol``), None for an external model."""
        return None if self.pretrained is None else self.pretrained.config.method.name

    @property
    def backbone(self) -> str:
        return self.spec.partition("@")[0] if self.pretrained is None else self.pretrained.config.backbone.name

    @property
    def c_min(self) -> float | None:
        return None if self.pretrained is None else float(self.pretrained.config.augment.c_min)

    @property
    def seed(self) -> int | None:
        """The pre-training seed (``train.seed``): what pairs the seeds of two groups."""
        return None if self.pretrained is None else int(self.pretrained.config.train.seed)

    @property
    def epoch(self) -> int | None:
        return None if self.pretrained is None else int(self.pretrained.epoch)

    @property
    def resolution(self) -> int:
        if self.pretrained is None:
            return int(self.encoder.resolution)
        return int(self.pretrained.config.augment.resolution)

    @property
    def global_description(self) -> str:
        """The global representation in words (figures name it)."""
        text = getattr(self.encoder, "global_description", None) or getattr(self.encoder, "global_text", None)
        if text is not None:
            return str(text)
        return "spatial mean of the map" + ("" if isinstance(pool_head(self.encoder), nn.Identity)
                                            else ", then the pool MLP")

    @property
    def description(self) -> str:
        """Where the local and global representations come from, in words."""
        text = getattr(self.encoder, "description", None)
        if text is not None:
            return str(text)
        how = getattr(getattr(self.encoder, "backbone", None), "map_text", None)
        return (f"local = the {self.backbone} feature map{f' ({how})' if how else ''}; "
                f"global = {self.global_description}")

    @property
    def slug(self) -> str:
        """``label`` made safe as a file or folder name."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("._") or "model"

    @functools.cached_property
    def classifier(self) -> nn.Module:
        """encoder + pooling (its head included) + probe: [0, 1] images -> logits."""
        if self.probe is None:
            raise AnalysisError(f"{self.source} has no linear probe")
        from cossl_analysis.analyses.accuracy import ProbeClassifier

        return ProbeClassifier(self.encoder, self.probe)

    @functools.cached_property
    def provenance(self) -> dict[str, Any]:
        """Where the encoder's weights came from: the file and its SHA-256, how the architecture was
        initialised (``pretrained=``), and which state-dict tensors were loaded and which missing."""
        if self.pretrained is None:
            found = getattr(self.encoder, "provenance", None)
            return dict(found) if found else {"source": self.spec, "weights": "as given (a module in memory)"}
        from cossl_analysis.external.build import sha256

        pre, keys = self.pretrained, len(self.pretrained.encoder.state_dict())
        spec_note = "" if pre.config.backbone.name in _registered() else (
            f"; architecture {pre.config.backbone.name} from its library's initialisation (pretrained=False: "
            "nothing downloaded)")
        return {"source": str(pre.path), "weights": str(pre.path.resolve()), "sha256": sha256(pre.path),
                "pretrained": f"cossl-train pretrain, epoch {pre.epoch}, train.seed={pre.config.train.seed}{spec_note}",
                "loaded": keys, "architecture_keys": keys, "missing": [], "probe": self.probe_source}

    @property
    def provenance_text(self) -> str:
        """:attr:`provenance` in one line, for the report's models table."""
        p = self.provenance
        if "sha256" not in p:
            return f"{p.get('weights')}; {p.get('pretrained', '')}".strip("; ")
        missing = ", ".join(p.get("missing") or []) or "none"
        return (f"{p['weights']} (sha256 {p['sha256'][:12]}...): {p['loaded']} of {p['architecture_keys']} tensors "
                f"loaded, missing: {missing}")

    @functools.cached_property
    def fingerprint(self) -> str:
        """Hash of the encoder and probe weights (and, for an external model, of where its map and
        global representation come from): what a cached result of this model depends on."""
        digest = weights_fingerprint(self.encoder, self.probe)
        if self.pretrained is not None:
            return digest
        choice = f"{getattr(self.encoder, 'map_description', '')}|{getattr(self.encoder, 'global_description', '')}"
        return hashlib.blake2b(f"{digest}|{choice}".encode(), digest_size=16).hexdigest()

    def with_probe(self, probe: nn.Linear, source: str, kind: str) -> Model:
        """The same model scored with another probe."""
        pretrained = None if self.pretrained is None else replace(self.pretrained, probe=probe)
        return replace(self, probe=probe, probe_source=source, probe_kind=kind, pretrained=pretrained)


def _registered() -> list[str]:
    from cossl_train.backbones import list_backbones

    return list_backbones()


def stamp_provenance(out: Path, files: Sequence[str], models: Sequence[Model]) -> None:
    """Write each model's :attr:`Model.provenance` into the JSON result files among ``files``.

    A file keyed by model label (or by group) gets it inside each model's (each group's) own record,
    so that its keys stay the labels; any other JSON object gets a top-level ``provenance`` (label ->
    record). A group keyed to a list (the large-crop curves) has no record to hold it: the manifest
    and the report's models table do."""
    import json

    from cossl_analysis.report.files import write_json

    records = {m.label: m.provenance for m in models}
    groups: dict[str, dict[str, Any]] = {}
    for m in models:
        groups.setdefault(m.group, {})[m.label] = records[m.label]
    for name in files:
        path = out / name
        if path.suffix != ".json" or not path.is_file():
            continue
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            continue
        if data and all(isinstance(v, list) for v in data.values()):
            continue  # curves keyed by label (large crop): no record to hold it
        if any(key in records or key in groups for key in data):
            for key, value in data.items():
                if isinstance(value, dict) and key in records:
                    value["provenance"] = records[key]
                elif isinstance(value, dict) and key in groups:
                    value["provenance"] = groups[key]
        else:
            data["provenance"] = records
        write_json(data, path)


def _told_apart(model: Any, how: int) -> str:
    """What tells ``model`` (a :class:`Pretrained` or the spec of an external model) apart from
    another seed of its group: pre-training c_min (``how`` 0), seed (1), run folder or spec (2)."""
    if isinstance(model, str):  # an external model: only its spec tells it apart
        return f"({model})" if how == 2 else ""
    cfg = model.config
    return (f"c_min={cfg.augment.c_min:g}", f"seed={cfg.train.seed}", f"({model.path.parent.name})")[how]


def unique_labels(groups: Sequence[str], models: Sequence[Any]) -> list[str]:
    """Labels telling apart models of the same group: by pre-training ``c_min`` where that differs
    within the group, then by ``train.seed``, then by run folder (or spec), then by position (``#k``).
    ``models`` are :class:`Pretrained` checkpoints or spec strings of external models."""
    labels = list(groups)
    for how in range(3):
        told = [_told_apart(m, how) for m in models]
        values: dict[str, set[str]] = {}
        for lab, t in zip(labels, told, strict=True):
            values.setdefault(lab, set()).add(t)
        labels = [f"{lab} {t}" if labels.count(lab) > 1 and len(values[lab]) > 1 and t else lab
                  for lab, t in zip(labels, told, strict=True)]
    repeated = {lab for lab in labels if labels.count(lab) > 1}
    return [f"{lab} #{k + 1}" if lab in repeated else lab for k, lab in enumerate(labels)]


def probe_kind(pre: Pretrained) -> str:
    """The kind (a key of :data:`PROBE_KINDS`) of the probe ``load_pretrained`` chose."""
    if pre.probe is None:
        return "none"
    if pre.probe_source.startswith("offline"):
        return "standard" if "standard" in pre.probe_source else "fast"
    return "online"


def _probe_source(pre: Pretrained) -> str:
    """Which probe ``load_pretrained`` chose, in the report's words."""
    kind = probe_kind(pre)
    if kind == "none":
        return "none"
    if kind == "online":
        return "online probe (trained during pre-training)"
    return f"offline {PROBE_KINDS[kind]} by cossl-train linear-probe ({probe_path(pre.path).name})"


def _cossl_model(spec: str, pre: Pretrained, label: str, group: str) -> Model:
    return Model(label, group, spec, pre.encoder, pre.probe, _probe_source(pre), probe_kind(pre), pre)


def load_models(
    paths: Sequence[str | os.PathLike[str]],
    labels: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    layer: str | None = None,
    global_pool: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resolution: int | None = None,
) -> list[Model]:
    """Load models: cossl checkpoints (files or run folders) and model specs (``torchvision:NAME[@WEIGHTS]``,
    ``timm:NAME[@WEIGHTS]``, ``MODULE:FUNCTION[@WEIGHTS]``, see ``cossl_analysis.external``);
    ``labels`` (one per model, may repeat) name their groups.

    ``layer``, ``global_pool``, ``mean``, ``std`` apply to every external model; ``resolution`` is
    their evaluation side (default: the first checkpoint's resolution, else each model's own).
    Probes may be missing (``cossl_analysis.report.probes.ensure_probes`` trains them).
    """
    from cossl_analysis.external import load_external, parse_spec

    if not paths:
        raise AnalysisError("give at least one checkpoint or model spec")
    if labels is not None and len(labels) != len(paths):
        raise AnalysisError(f"--labels gives {len(labels)} labels for {len(paths)} checkpoints")
    specs = [parse_spec(os.fspath(p)) for p in paths]
    loaded: dict[int, Pretrained] = {i: load_checkpoint(s.text, device) for i, s in enumerate(specs)
                                     if s.kind == "cossl"}
    if resolution is None and loaded:
        resolution = int(next(iter(loaded.values())).config.augment.resolution)
    encoders = {i: load_external(s, layer=layer, global_pool=global_pool, mean=mean, std=std,  # type: ignore[arg-type]
                                 resolution=resolution, device=device)
                for i, s in enumerate(specs) if s.kind != "cossl"}
    items: list[Any] = [loaded[i] if i in loaded else specs[i].text for i in range(len(specs))]
    groups = list(labels) if labels is not None else [
        display_name(loaded[i].config.method.name) if i in loaded else specs[i].text.partition("@")[0]
        for i in range(len(specs))]
    out = []
    for i, (label, group) in enumerate(zip(unique_labels(groups, items), groups, strict=True)):
        if i in loaded:
            out.append(_cossl_model(specs[i].text, loaded[i], label, group))
        else:
            out.append(Model(label, group, specs[i].text, encoders[i], None, "none (an external model)", "none"))
    return out


def check_resolutions(models: Sequence[Model]) -> None:
    """One-line error when the checkpoints were trained at different resolutions (one shared image set);
    external models run at the evaluation resolution."""
    trained = [m for m in models if not m.is_external]
    if len({m.resolution for m in trained}) > 1:
        which = ", ".join(f"{m.label}: {m.resolution} px" for m in trained)
        raise AnalysisError(f"the checkpoints were trained at different resolutions ({which}); every analysis uses "
                            "one evaluation set, so compare checkpoints of the same augment.resolution")


@dataclass
class EvalSet:
    """The evaluation images, held in memory as uint8 (corruptions work on uint8).

    Attributes:
        images: uint8 (N, 3, R, R).
        labels: int64 (N,), or None when the images are unlabelled.
        indices: positions of the images within the split (None: all of it, in order).
        split_size: number of images of the split they were drawn from.
        description: where they come from, in words.
        split: ``"val"`` or ``"held-out"``.
        skipped: unreadable images dropped.
        classes: number of classes of the dataset (0: unknown, then the labels' maximum + 1).
    """

    images: Tensor
    labels: Tensor | None
    indices: list[int] | None
    split_size: int
    description: str
    split: str = "val"
    skipped: int = 0
    classes: int = 0
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{tuple(self.images.shape)}".encode())
        digest.update(self.images.contiguous().numpy().tobytes())
        if self.labels is not None:
            digest.update(self.labels.to(torch.int64).contiguous().numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """Classes of the dataset (not only those among these images): chance is 1 / this."""
        if self.labels is None:
            return 0
        return max(self.classes, int(self.labels.max()) + 1)

    @functools.cached_property
    def pixels(self) -> Tensor:
        """Float images in [0, 1] (what the models and the attacks take)."""
        return pixels(self.images)


def _collate(batch: list[Any]) -> Any:
    from cossl_train.data import collate_skip_none

    return collate_skip_none(batch, n_fields=2)


def load_eval_set(cfg: Config, n_images: int = 0, seed: int = 0, progress: bool = True) -> EvalSet:
    """The validation split of ``cfg.data`` at ``cfg.augment.resolution`` (``eval_splits``).

    Args:
        cfg: the config whose ``data`` and ``augment`` sections pick the images.
        n_images: keep a fixed random subset of this many images (seeded by ``seed``, in split
            order); 0 = all.
        seed: seeds the subset.
        progress: tqdm bar while loading.
    """
    from torch.utils.data import DataLoader, Subset

    from cossl_train.evaluate import eval_splits

    if n_images < 0:
        raise AnalysisError(f"images={n_images} must be >= 0 (0 = the whole split)")
    _, val = eval_splits(cfg.data, cfg.augment)
    where = f" at {cfg.data.val_root or cfg.data.root}" if cfg.data.dataset == "imagefolder" else ""
    held_out = isinstance(val, Subset)  # eval_splits holds out training images when there is no split
    split = "about 10% of the training images, held out by a hash of each file path" if held_out else "validation split"
    description = f"{cfg.data.dataset}{where}, {split}"
    split_size = len(val)  # type: ignore[arg-type]
    indices: list[int] | None = None
    if 0 < n_images < split_size:
        # a random subset rather than the first N: folder datasets are sorted by class
        generator = torch.Generator().manual_seed(seed)
        indices = sorted(torch.randperm(split_size, generator=generator)[:n_images].tolist())
        val = Subset(val, indices)
    loader = DataLoader(val, batch_size=256, shuffle=False, num_workers=cfg.data.num_workers, collate_fn=_collate)
    images, labels, skipped = [], [], 0
    for batch in tqdm(loader, desc="loading evaluation images", disable=not progress, leave=False):
        skipped += batch.skipped
        if batch.label.numel():
            images.append(batch.image)
            labels.append(batch.label)
    if not labels:
        raise AnalysisError(f"the evaluation set ({description}) has no readable image")
    label_tensor = torch.cat(labels).to(torch.int64)
    return EvalSet(torch.cat(images), None if (label_tensor < 0).any() else label_tensor, indices, split_size,
                   description, "held-out" if held_out else "val", skipped, _num_classes(val))


def _num_classes(dataset: Any) -> int:
    """The class count of a dataset (through Subset wrappers), 0 when it does not say."""
    from torch.utils.data import Subset

    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return len(getattr(dataset, "classes", None) or [])


def _open_image(spec: str | Path) -> Any:
    """A PIL image from a file path or ``skimage:<name>`` (a scikit-image sample photo, no download)."""
    from PIL import Image

    text = str(spec)
    if text.startswith(SKIMAGE_PREFIX):
        import skimage.data

        name = text[len(SKIMAGE_PREFIX):]
        loader = getattr(skimage.data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"{text}: scikit-image has no sample image {name!r} (e.g. astronaut, coffee, chelsea)")
        return Image.fromarray(np.asarray(loader()))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as img:
        img.load()
        return img.copy()


def load_images(specs: Sequence[str | Path], resolution: int) -> Tensor:
    """Image files or ``skimage:<name>`` sample photos as (B, 3, R, R) float32 in [0, 1], through the
    evaluation transform (resize, centre crop, grey -> RGB): as a model sees its validation images."""
    from cossl_train.augment import EvalTransform

    if not specs:
        raise ValueError("load_images needs at least one image")
    tf = EvalTransform(resolution)
    return pixels(torch.stack([tf(_open_image(s)) for s in specs]))
