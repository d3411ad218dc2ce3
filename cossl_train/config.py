"""Typed configuration: every default lives here, YAML files and dotted overrides merge on top.

A config file only names what differs from these defaults. Unknown keys and values of the wrong
type are refused with a one-line error that names the key (OmegaConf structured configs).
``co.lambda`` is accepted as an alias of ``co.lam`` (``lambda`` is a Python keyword).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message is one line."""


@dataclass
class DataConfig:
    #: digits (embedded, no download) | imagefolder | tinyimagenet | cifar10 | cifar100 | stl10
    dataset: str = "digits"
    #: dataset root (imagefolder: the training folder; tinyimagenet: the tiny-imagenet-200 folder;
    #: torchvision sets: their root)
    root: str | None = None
    #: imagefolder only: a labelled validation folder for probes (optional)
    val_root: str | None = None
    #: imagefolder only: file with one class folder name per line, or "imagenet100" (CMC list)
    class_list: str | None = None
    #: torchvision sets only: fetch the files if missing (never done unless asked)
    download: bool = False
    #: digits only: side length the 8x8 digits are upscaled to when loaded
    digits_size: int = 32
    num_workers: int = 2
    #: cap on the number of training images (0 = all); for quick runs
    limit: int = 0


@dataclass
class AugmentConfig:
    #: training and evaluation resolution (pixels)
    resolution: int = 32
    #: minimum scale of RandomResizedCrop (the paper's c_min)
    c_min: float = 0.08
    #: maximum scale of RandomResizedCrop
    c_max: float = 1.0
    #: colour jitter strengths (BYOL: 0.4, 0.4, 0.2, 0.1 applied with p=0.8)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    #: blur probability of view 1 and view 2 (BYOL's asymmetry: 1.0 and 0.1)
    blur_p: tuple[float, float] = (1.0, 0.1)
    #: solarisation probability of view 1 and view 2 (BYOL: 0.0 and 0.2)
    solarize_p: tuple[float, float] = (0.0, 0.2)
    #: multi-crop (DINO, "BYOL + multi-crop"): small local crops per image on top of the two
    #: global views; 0 = off (DINO uses 8)
    local_crops: int = 0
    #: RandomResizedCrop scale range of the local crops (DINO's ResNet-50 recipe: 0.05..0.14, with
    #: global crops c_min..c_max = 0.14..1)
    local_crop_scale: tuple[float, float] = (0.05, 0.14)
    #: side of the local crops in pixels; 0 = round(resolution * 96 / 224) (DINO: 96 px at 224)
    local_resolution: int = 0
    #: blur probability of the local crops (DINO: 0.5; local crops are never solarised)
    local_blur_p: float = 0.5
    #: normalisation applied inside the encoder (inputs stay in [0, 1] pixel space)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class BackboneConfig:
    #: a name from ``cossl-train backbones``
    name: str = "resnet18"
    #: CIFAR-style stem: 3x3 stride-1 first conv and no max-pool
    small_image: bool = False
    #: base channel width (64 = the standard ResNet); smaller for tiny models
    width: int = 64


@dataclass
class HeadConfig:
    """Global projector/predictor MLPs (Linear-BN-ReLU-Linear), BYOL's sizes by default."""

    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096


@dataclass
class CoConfig:
    """The CO term: local heads and the local-to-global loss (DESIGN.md section 1)."""

    #: lambda, the weight of the local loss; 0 gives the base method exactly
    lam: float = 1.0
    #: local_to_global | global_to_local | both (mean of the two)
    direction: str = "both"
    #: hidden width of the local projector and predictor (applied at every position, so
    #: smaller than the global heads' by default to keep the step cost low)
    proj_hidden: int = 1024
    pred_hidden: int = 1024


@dataclass
class MethodConfig:
    #: byol | co_byol | simclr | co_simclr
    name: str = "co_byol"
    #: SimCLR / CO-SimCLR InfoNCE temperature
    temperature: float = 0.2
    #: BYOL base EMA rate, raised to 1 along a cosine schedule
    ema_base: float = 0.99


@dataclass
class OptimConfig:
    #: lars | sgd | adamw
    name: str = "lars"
    #: base learning rate; see lr_scaling
    lr: float = 0.2
    #: linear: effective lr = lr * global_batch / 256 (printed at start); none: lr as given
    lr_scaling: str = "linear"
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    #: LARS trust coefficient (eta) and whether the adapted lr is clipped to the base lr
    lars_eta: float = 0.001
    lars_clip: bool = False
    warmup_epochs: float = 1.0
    #: final learning rate of the cosine schedule, as a fraction of the peak
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class TrainConfig:
    epochs: int = 10
    #: per-process batch size (global batch = batch_size * world size * accum_steps)
    batch_size: int = 256
    accum_steps: int = 1
    #: auto (bf16 on GPUs that support it, fp32 on CPU) | bf16 | fp32
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    seed: int = 0
    out_dir: str = "runs/default"
    #: online linear probe on detached features (needs labels)
    online_probe: bool = True
    probe_lr: float = 1e-3
    log_every: int = 10
    #: 0 = full epochs; >0 stops each epoch after this many optimizer steps (smoke runs)
    max_steps_per_epoch: int = 0
    tensorboard: bool = True
    #: evaluate with kNN on the validation split after every epoch (0 = never)
    knn_every: int = 0


@dataclass
class EvalConfig:
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 100
    linear_lr: float = 0.1
    linear_batch_size: int = 256
    linear_weight_decay: float = 0.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    co: CoConfig = field(default_factory=CoConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_CHOICES = {
    ("method", "name"): ("byol", "co_byol", "simclr", "co_simclr"),
    ("co", "direction"): ("local_to_global", "global_to_local", "both"),
    ("optim", "name"): ("lars", "sgd", "adamw"),
    ("optim", "lr_scaling"): ("linear", "none"),
    ("train", "precision"): ("auto", "bf16", "fp32"),
    ("data", "dataset"): ("digits", "imagefolder", "tinyimagenet", "cifar10", "cifar100", "stl10"),
}


def _alias(key: str) -> str:
    return key.replace("co.lambda", "co.lam")


def _rename_lambda(d: Any) -> Any:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out["lam" if k == "lambda" else k] = _rename_lambda(v)
        return out
    return d


def validate(cfg: Config) -> Config:
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {', '.join(allowed)}")
    if not 0 < cfg.augment.c_min <= cfg.augment.c_max <= 1:
        raise ConfigError(f"augment.c_min={cfg.augment.c_min} must satisfy 0 < c_min <= c_max <= 1")
    for name in ("batch_size", "epochs", "accum_steps"):
        if getattr(cfg.train, name) < 1:
            raise ConfigError(f"train.{name}={getattr(cfg.train, name)} must be >= 1")
    if cfg.co.lam < 0:
        raise ConfigError(f"co.lam={cfg.co.lam} must be >= 0")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides."""
    base = OmegaConf.structured(Config)
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            import yaml

            raw = yaml.safe_load(path.read_text()) or {}
        except Exception as e:  # noqa: BLE001 - reported as one line
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        layers.append((str(path), OmegaConf.create(_rename_lambda(raw))))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    if overrides:
        layers.append(("command line", OmegaConf.from_dotlist([_alias(o) for o in overrides])))
    merged = base
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or ""
            msg = str(e).splitlines()[0]
            raise ConfigError(f"{source}: bad config key or value {key!r}: {msg}") from None
    cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    return validate(cfg)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...],
                    sections: tuple[str, ...] | None = None) -> Config:
    """``cfg`` with ``key=value`` overrides applied, optionally only within ``sections``."""
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
        if sections is not None and _alias(o).split(".")[0] not in sections:
            raise ConfigError(f"override {o!r} not allowed here; only {', '.join(sections)} keys can change")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist([_alias(o) for o in overrides]))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        raise ConfigError(f"command line: bad config key or value {key!r}: {str(e).splitlines()[0]}") from None
    return validate(OmegaConf.to_object(merged))  # type: ignore[arg-type]


def to_dict(cfg: Config) -> dict:
    return asdict(cfg)


def from_dict(d: dict) -> Config:
    """Rebuild a Config from a checkpoint's dict (unknown keys refused, as for files)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d))
    except OmegaConfBaseException as e:
        raise ConfigError(f"stored config: {str(e).splitlines()[0]}") from None
    return validate(OmegaConf.to_object(merged))  # type: ignore[arg-type]


def dump_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
