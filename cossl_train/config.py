"""Typed configuration: every default lives here, YAML files and dotted overrides merge on top.

A config file only names what differs from these defaults. Unknown keys and values of the wrong
type are refused with a one-line error that names the key (OmegaConf structured configs), and so
are values outside their range (:data:`RANGES`), before anything is built; keys of
earlier versions (``co.lambda``, ``co.lam``, ``method.temperature``) are refused with the name of
the key that replaced them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError  # re-exported for callers


@dataclass
class DataConfig:
    #: scenes (embedded default: digit scenes, no download) | digits (embedded) | imagefolder |
    #: tinyimagenet | cifar10 | cifar100 | stl10
    dataset: str = "scenes"
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
    #: scenes only: side length of the generated digit scenes
    scenes_size: int = 32
    #: DataLoader worker processes (0 = load in the main process)
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
    #: colour jitter brightness strength (BYOL: 0.4)
    brightness: float = 0.4
    #: colour jitter contrast strength (BYOL: 0.4)
    contrast: float = 0.4
    #: colour jitter saturation strength (BYOL: 0.2)
    saturation: float = 0.2
    #: colour jitter hue strength (BYOL: 0.1)
    hue: float = 0.1
    #: probability that a view is colour-jittered (BYOL: 0.8)
    jitter_p: float = 0.8
    #: probability that a view is turned grey (BYOL: 0.2)
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
    #: per-channel mean of the normalisation applied inside the encoder (inputs stay in [0, 1] pixel space)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    #: per-channel std of that normalisation
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class BackboneConfig:
    #: a name from ``cossl-train backbones``, or a model spec: torchvision:NAME, timm:NAME or
    #: MODULE:FUNCTION (also module:MODULE:FUNCTION), built freshly initialised (docs/training.md)
    name: str = "resnet18"
    #: registered backbones only: the stem: true = CIFAR-style (3x3 stride-1 first conv, no
    #: max-pool), false = ImageNet's (7x7 stride 2 + max-pool); unset = the backbone's own
    small_image: bool | None = None
    #: registered backbones only: base channel width (64 = the standard ResNet); smaller for tiny
    #: models (a model spec takes its own widths through backbone.kwargs)
    width: int = 64
    #: model specs only: keyword arguments of the library's builder or the function, e.g.
    #: {img_size: 32, patch_size: 4, depth: 4} for timm:vit_tiny_patch16_224
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: the MLP after average pooling (the paper's RF-limited backbones have one); unset = the
    #: backbone's default (on for the RF-ResNet presets). The global representation that the
    #: projector and every linear probe read is its output.
    pool_mlp: bool | None = None
    #: hidden width of that MLP (0 = the feature width)
    pool_mlp_hidden: int = 0


@dataclass
class HeadConfig:
    """Global projector/predictor MLPs, BYOL's sizes by default (DINO: the head's hidden width and
    bottleneck; its output size is ``method.dino.out_dim``)."""

    #: hidden width of the global projector (DINO: of its head's MLP)
    proj_hidden: int = 4096
    #: output width of the global projector (DINO: the head's bottleneck)
    proj_dim: int = 256
    #: hidden width of the global predictor (BYOL, MoCo-v3)
    pred_hidden: int = 4096


@dataclass
class CoConfig:
    """The CO term (docs/method.md): local heads and the local/global loss."""

    #: w_s in L = (1 - w_s) L_g + w_s L_l; 0 gives the base method exactly. The paper's good
    #: range 0.2-0.5 is second-hand (see docs/method.md); 0.3 is our default inside it.
    local_weight: float = 0.3
    #: local_to_global | global_to_local | both (mean of the two)
    direction: str = "both"
    #: hidden width of the local projector (applied at every position, so smaller than the
    #: global heads' by default to keep the step cost low)
    proj_hidden: int = 1024
    #: hidden width of the local predictor
    pred_hidden: int = 1024
    #: average-pool the local map to grid x grid before the local heads (0 = the map as it is)
    grid: int = 0
    #: the local heads are the global ones (pool MLP, projector, predictor at every position)
    shared_heads: bool = False
    #: targets of the global-to-local direction: local_heads (the momentum local projector, for
    #: SimCLR the online one; Figure 1's second local projector) | global_heads (the momentum
    #: global path at every position, a space tied to the global target's)
    local_targets: str = "local_heads"


@dataclass
class SimCLRConfig:
    #: temperature of SimCLR's NT-Xent loss
    temperature: float = 0.2


@dataclass
class MoCoV3Config:
    #: MoCo-v3's temperature for ResNet-50 (0.2 is its ViT value)
    temperature: float = 1.0


@dataclass
class DINOConfig:
    """DINO's ResNet-50 recipe (its repository's defaults and README command)."""

    #: number of prototypes K (the head's output size)
    out_dim: int = 65536
    #: linear layers of the head's MLP (to the bottleneck of size ``head.proj_dim``)
    head_layers: int = 3
    #: keep the last layer's row norms at 1 (the ResNet-50 recipe); false learns them
    norm_last_layer: bool = True
    #: BatchNorm in the head's MLP (DINO's ``use_bn_in_head``; off in its ResNet-50 recipe)
    head_bn: bool = False
    #: temperature of the student's softmax
    student_temp: float = 0.1
    #: temperature of the teacher's softmax (after the warm-up)
    teacher_temp: float = 0.04
    #: teacher temperature at epoch 0, raised linearly to teacher_temp over the warm-up epochs
    teacher_temp_warmup: float = 0.04
    #: epochs of that warm-up (0 = none)
    teacher_temp_warmup_epochs: int = 0
    #: EMA rate of the centre subtracted from the teacher's output
    center_momentum: float = 0.9
    #: epochs during which the last layer's gradient is dropped
    freeze_last_layer_epochs: float = 1.0


@dataclass
class MethodConfig:
    #: a base method (byol, dino, mocov3, simclr) or its CO form (co_byol, ...)
    name: str = "co_byol"
    #: base EMA rate of the momentum branch (BYOL, DINO, MoCo-v3), raised to 1 along a cosine
    ema_base: float = 0.99
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    mocov3: MoCoV3Config = field(default_factory=MoCoV3Config)
    dino: DINOConfig = field(default_factory=DINOConfig)


@dataclass
class OptimConfig:
    #: lars | sgd | adamw
    name: str = "lars"
    #: base learning rate; see lr_scaling
    lr: float = 0.2
    #: linear: effective lr = lr * global_batch / 256 (printed at start); none: lr as given
    lr_scaling: str = "linear"
    #: weight decay
    weight_decay: float = 1.5e-6
    #: momentum of SGD and LARS
    momentum: float = 0.9
    #: LARS trust coefficient (eta)
    lars_eta: float = 0.001
    #: clip LARS's adapted learning rate to the base learning rate
    lars_clip: bool = False
    #: epochs of linear learning-rate warm-up before the cosine schedule
    warmup_epochs: float = 1.0
    #: final learning rate of the cosine schedule, as a fraction of the peak
    min_lr_ratio: float = 0.0
    #: AdamW's (beta1, beta2)
    betas: tuple[float, float] = (0.9, 0.999)
    #: clip each parameter's gradient norm to this value (DINO: 3.0); 0 = off
    clip_grad: float = 0.0


@dataclass
class TrainConfig:
    #: pre-training epochs
    epochs: int = 10
    #: per-process batch size (global batch = batch_size * world size * accum_steps)
    batch_size: int = 256
    #: micro-batches whose gradients are accumulated per optimizer step
    accum_steps: int = 1
    #: auto (bf16 autocast on CUDA and on CPUs with native bf16 -- AVX512-BF16 or AMX --, fp32
    #: elsewhere; the choice and its reason are printed) | bf16 | fp32
    precision: str = "auto"
    #: channels-last memory format (faster convolutions on recent GPUs)
    channels_last: bool = False
    #: run the model through torch.compile
    compile: bool = False
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    #: seeds the weights, the data order and the augmentations (runs that differ only in it are replicas)
    seed: int = 0
    #: run folder: checkpoint, logs, config
    out_dir: str = "runs/default"
    #: online linear probe on detached, normalised features (needs labels); evaluated on the
    #: validation split every ``probe_eval_every`` epochs (0 = never)
    online_probe: bool = True
    #: learning rate of the online probe
    probe_lr: float = 1e-3
    #: what the online probe trains on: "clean" (each training image resized as the evaluation
    #: does, carried beside its crops, encoded without gradient in eval mode: the probe then sees
    #: the distribution it is scored on) or "views" (the two augmented global views)
    probe_input: str = "clean"
    #: epochs between evaluations of the online probe on the validation split (0 = never)
    probe_eval_every: int = 1
    #: optimizer steps between the lines of metrics.jsonl
    log_every: int = 10
    #: 0 = full epochs; >0 stops each epoch after this many optimizer steps (smoke runs)
    max_steps_per_epoch: int = 0
    #: mirror the logged metrics to TensorBoard
    tensorboard: bool = True
    #: evaluate with kNN on the validation split after every epoch (0 = never)
    knn_every: int = 0
    #: also keep the checkpoint of these epochs, in out_dir/epochNNN/ (points of a budget curve; a
    #: kept checkpoint is this run at that epoch, on its own schedule, not a shorter run)
    keep_epochs: tuple[int, ...] = ()


@dataclass
class EvalConfig:
    """Offline evaluation of a frozen encoder (docs/evaluation.md).

    Linear protocols: ``fast`` trains the head on features of centre crops encoded once;
    ``standard`` (the protocol of published ImageNet numbers) trains it with SGD on
    random-resized-crop + flip views encoded anew every epoch, and evaluates on centre crops.
    Both use the ``linear_*`` recipe below.
    """

    #: neighbours of the weighted kNN classifier
    knn_k: int = 20
    #: temperature of the kNN's similarity weights
    knn_temperature: float = 0.07
    #: fast | standard
    linear_protocol: str = "fast"
    #: epochs of the linear probe
    linear_epochs: int = 100
    #: learning rate of the linear probe (SGD)
    linear_lr: float = 0.1
    #: batch size of the linear probe
    linear_batch_size: int = 256
    #: weight decay of the linear probe
    linear_weight_decay: float = 0.0
    #: SGD momentum of the linear probe
    linear_momentum: float = 0.9
    #: standard protocol: scale range of the training views' RandomResizedCrop
    linear_crop_scale: tuple[float, float] = (0.08, 1.0)


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
    ("co", "direction"): ("local_to_global", "global_to_local", "both"),
    ("co", "local_targets"): ("local_heads", "global_heads"),
    ("eval", "linear_protocol"): ("fast", "standard"),
    ("optim", "name"): ("lars", "sgd", "adamw"),
    ("optim", "lr_scaling"): ("linear", "none"),
    ("train", "precision"): ("auto", "bf16", "fp32"),
    ("train", "probe_input"): ("clean", "views"),
    ("data", "dataset"): ("scenes", "digits", "imagefolder", "tinyimagenet", "cifar10", "cifar100", "stl10"),
}


#: keys of earlier versions -> what replaced them (a config naming one stops with this hint)
RENAMED: dict[str, str] = {
    "co.lambda": "co.local_weight (w_s in L = (1 - w_s) L_g + w_s L_l, no longer L_g + lambda L_l)",
    "co.lam": "co.local_weight (w_s in L = (1 - w_s) L_g + w_s L_l, no longer L_g + lambda L_l)",
    "method.temperature": "method.simclr.temperature or method.mocov3.temperature",
}


def _check_renamed(keys: list[str], source: str) -> None:
    for key in keys:
        if key in RENAMED:
            raise ConfigError(f"{source}: {key} was renamed: use {RENAMED[key]}")


def _dotted_keys(d: Any, prefix: str = "") -> list[str]:
    if not isinstance(d, dict):
        return []
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += [key, *_dotted_keys(v, key + ".")]
    return out


def _check(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> Any:
    """A range test and its wording, e.g. ``_check(0, None, low_open=True)`` -> (x > 0, "> 0")."""
    def ok(x: float) -> bool:
        above = low is None or (x > low if low_open else x >= low)
        below = high is None or (x < high if high_open else x <= high)
        return above and below and x == x  # NaN fails every range

    parts = ([f"{'>' if low_open else '>='} {low:g}"] if low is not None else []) + \
            ([f"{'<' if high_open else '<='} {high:g}"] if high is not None else [])
    return ok, " and ".join(parts)


_POSITIVE = _check(0, None, low_open=True)
_NON_NEGATIVE = _check(0, None)
_AT_LEAST_ONE = _check(1, None)
_UNIT = _check(0, 1)
_UNIT_OPEN = _check(0, 1, high_open=True)

#: every numeric key and the range it must lie in (tuples: each element); checked before anything
#: is built, so a bad value is one line naming the key instead of a traceback from deep inside torch
RANGES: dict[str, tuple[Any, str]] = {
    **{f"data.{k}": _AT_LEAST_ONE for k in ("digits_size", "scenes_size")},
    **{f"data.{k}": _NON_NEGATIVE for k in ("num_workers", "limit")},
    "augment.resolution": _check(8, None),
    **{f"augment.{k}": _NON_NEGATIVE for k in ("brightness", "contrast", "saturation", "local_crops",
                                               "local_resolution")},
    "augment.hue": _check(0, 0.5),
    **{f"augment.{k}": _UNIT for k in ("jitter_p", "grayscale_p", "blur_p", "solarize_p", "local_blur_p",
                                       "mean")},
    "augment.local_crop_scale": _check(0, 1, low_open=True),
    "augment.std": _POSITIVE,
    **{f"backbone.{k}": _AT_LEAST_ONE for k in ("width",)},
    "backbone.pool_mlp_hidden": _NON_NEGATIVE,
    **{f"head.{k}": _AT_LEAST_ONE for k in ("proj_hidden", "proj_dim", "pred_hidden")},
    **{f"co.{k}": _AT_LEAST_ONE for k in ("proj_hidden", "pred_hidden")},
    "method.ema_base": _UNIT,
    "method.simclr.temperature": _POSITIVE,
    "method.mocov3.temperature": _POSITIVE,
    **{f"method.dino.{k}": _AT_LEAST_ONE for k in ("out_dim", "head_layers")},
    **{f"method.dino.{k}": _POSITIVE for k in ("student_temp", "teacher_temp", "teacher_temp_warmup")},
    "method.dino.teacher_temp_warmup_epochs": _NON_NEGATIVE,
    "method.dino.center_momentum": _UNIT,
    "method.dino.freeze_last_layer_epochs": _NON_NEGATIVE,
    "optim.lr": _NON_NEGATIVE,  # 0 freezes the weights (tests of the online probe use it)
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.momentum": _UNIT_OPEN,
    "optim.lars_eta": _POSITIVE,
    "optim.warmup_epochs": _NON_NEGATIVE,
    "optim.min_lr_ratio": _UNIT,
    "optim.betas": _UNIT_OPEN,
    "optim.clip_grad": _NON_NEGATIVE,
    "train.probe_lr": _POSITIVE,
    **{f"train.{k}": _NON_NEGATIVE for k in ("probe_eval_every", "max_steps_per_epoch", "knn_every")},
    "train.log_every": _AT_LEAST_ONE,
    **{f"eval.{k}": _AT_LEAST_ONE for k in ("knn_k", "linear_epochs", "linear_batch_size")},
    **{f"eval.{k}": _POSITIVE for k in ("knn_temperature", "linear_lr")},
    "eval.linear_weight_decay": _NON_NEGATIVE,
    "eval.linear_momentum": _UNIT_OPEN,
    "eval.linear_crop_scale": _check(0, 1, low_open=True),
}


def _get_dotted(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _check_ranges(cfg: Config) -> None:
    for key, (ok, wording) in RANGES.items():
        value = _get_dotted(cfg, key)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if not all(ok(v) for v in values):
            shown = list(value) if isinstance(value, (tuple, list)) else value
            raise ConfigError(f"{key}={shown} must be {wording}")
    for key in ("augment.local_crop_scale", "eval.linear_crop_scale"):
        low, high = _get_dotted(cfg, key)
        if low > high:
            raise ConfigError(f"{key}={[low, high]} must be (min, max) with min <= max")


def _check_backbone(b: BackboneConfig) -> None:
    """A registered name with its options, or a model spec without the options it cannot use."""
    from .backbones import backbone_defaults, list_backbones

    names = list_backbones()
    if b.name in names:
        if b.kwargs:
            raise ConfigError(f"backbone.kwargs={dict(b.kwargs)} applies to model specs (torchvision:NAME, timm:NAME, "
                              f"MODULE:FUNCTION), not to {b.name}: it is built from backbone.width and small_image")
        if b.small_image and not backbone_defaults(b.name)["small_image_available"]:
            raise ConfigError(f"backbone.small_image=true: {b.name} has no small-image stem")
        return
    from .backbones.spec import parse_spec
    from .errors import BackboneError

    try:
        spec = parse_spec(b.name)
    except BackboneError as err:
        raise ConfigError(f"backbone.name={b.name!r}: {err}") from None
    if spec.kind == "cossl":
        raise ConfigError(f"backbone.name={b.name!r} is not one of {', '.join(names)}, nor a model spec "
                          "(torchvision:NAME, timm:NAME, MODULE:FUNCTION)")
    if spec.weights is not None:
        raise ConfigError(f"backbone.name={b.name!r}: training starts from the architecture's initialisation; "
                          f"drop '@{spec.weights}'")
    if b.small_image is not None:
        raise ConfigError(f"backbone.small_image={str(b.small_image).lower()} applies to registered backbones, not to "
                          f"the model spec {b.name}: leave it unset (set the model's own options in backbone.kwargs)")
    if b.width != BackboneConfig.width:
        raise ConfigError(f"backbone.width={b.width} applies to registered backbones, not to the model spec {b.name}: "
                          "leave it at 64 (set the model's own widths in backbone.kwargs, e.g. embed_dim)")


def validate(cfg: Config) -> Config:
    from .methods import method_names

    names = method_names()
    if cfg.method.name not in names:
        raise ConfigError(f"method.name={cfg.method.name!r} is not one of {', '.join(names)}")
    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}={value!r} is not one of {', '.join(allowed)}")
    if not 0 < cfg.augment.c_min <= cfg.augment.c_max <= 1:
        bad = "c_max" if not 0 < cfg.augment.c_max <= 1 else "c_min"
        raise ConfigError(f"augment.{bad}={getattr(cfg.augment, bad)} must satisfy 0 < c_min <= c_max <= 1 "
                          f"(c_min={cfg.augment.c_min}, c_max={cfg.augment.c_max})")
    for name in ("batch_size", "epochs", "accum_steps"):
        if getattr(cfg.train, name) < 1:
            raise ConfigError(f"train.{name}={getattr(cfg.train, name)} must be >= 1")
    _check_backbone(cfg.backbone)
    if cfg.train.seed < 0:
        raise ConfigError(f"train.seed={cfg.train.seed} must be >= 0")
    bad = [e for e in cfg.train.keep_epochs if not 1 <= e <= cfg.train.epochs]
    if bad:
        raise ConfigError(f"train.keep_epochs={list(cfg.train.keep_epochs)}: {bad[0]} is not an epoch of this run "
                          f"(1-{cfg.train.epochs})")
    if not 0 <= cfg.co.local_weight <= 1:
        raise ConfigError(f"co.local_weight={cfg.co.local_weight} must lie in [0, 1] (it is w_s in "
                          "L = (1 - w_s) L_g + w_s L_l)")
    if cfg.co.grid < 0:
        raise ConfigError(f"co.grid={cfg.co.grid} must be >= 0 (0 = the feature map as it is)")
    _check_ranges(cfg)
    if cfg.augment.local_crops and cfg.method.name.endswith("simclr"):
        raise ConfigError(f"augment.local_crops={cfg.augment.local_crops}: multi-crop is supported by byol, dino, "
                          f"mocov3 and their CO forms, not by {cfg.method.name}")
    return cfg


def _restore_tuples(obj: Any) -> Any:
    """Fields declared as tuples back to tuples, in place: omegaconf 2.3 hands them over as lists
    (2.4 as tuples), and a config must read the same under both."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            _restore_tuples(value)
        elif isinstance(value, list) and str(f.type).startswith("tuple"):
            setattr(obj, f.name, tuple(value))
    return obj


def to_object(node: Any) -> Any:
    """``OmegaConf.to_object`` with the same result under omegaconf 2.3 and 2.4."""
    return _restore_tuples(OmegaConf.to_object(node))


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
        _check_renamed(_dotted_keys(raw), str(path))
        layers.append((str(path), OmegaConf.create(raw)))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    _check_renamed([o.split("=", 1)[0] for o in overrides], "command line")
    if overrides:
        layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    merged = base
    for source, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or ""
            msg = str(e).splitlines()[0]
            raise ConfigError(f"{source}: bad config key or value {key!r}: {msg}") from None
    return validate(to_object(merged))


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...],
                    sections: tuple[str, ...] | None = None) -> Config:
    """``cfg`` with ``key=value`` overrides applied, optionally only within ``sections``."""
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not of the form key=value")
        if sections is not None and o.split(".")[0] not in sections:
            raise ConfigError(f"override {o!r} not allowed here; only {', '.join(sections)} keys can change")
    _check_renamed([o.split("=", 1)[0] for o in overrides], "command line")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        raise ConfigError(f"command line: bad config key or value {key!r}: {str(e).splitlines()[0]}") from None
    return validate(to_object(merged))


def to_dict(cfg: Config) -> dict:
    return asdict(cfg)


def from_dict(d: dict) -> Config:
    """Rebuild a Config from a checkpoint's dict (unknown keys refused, as for files)."""
    _check_renamed(_dotted_keys(d), "stored config")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(d))
    except OmegaConfBaseException as e:
        raise ConfigError(f"stored config: {str(e).splitlines()[0]}") from None
    return validate(to_object(merged))


def dump_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
