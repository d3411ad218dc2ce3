"""The settings of every analysis: :class:`AnalysisConfig`, typed sections on OmegaConf.

``cossl-analysis`` takes them as ``key=value`` overrides (``images=256``, ``erf.images=8``,
``robustness.eps=[1,2]``). Bad keys and values are one-line errors naming the key, and the option
names of earlier versions are refused with the key that replaced them (:data:`RENAMED`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# torch-free modules only: --help and argument errors read these settings without the numerical stack
from cossl_analysis.analyses.corruption import (
    COMMON_CORRUPTIONS,
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    MIN_LIBRARY_SIZE,
    SEVERITIES,
)
from cossl_analysis.analyses.defaults import ATTACKS, DEFAULT_FRACTIONS, DEFAULT_POSITIONS, DEFAULT_STRENGTHS, KINDS
from cossl_analysis.errors import AnalysisError
from cossl_train.config import to_object

__all__ = [
    "RENAMED",
    "AnalysisConfig",
    "ErfConfig",
    "ExternalConfig",
    "PROBE_SETTINGS",
    "InternalCorruptionConfig",
    "PatchDropConfig",
    "RobustnessConfig",
    "SimilarityConfig",
    "load_analysis_config",
    "section_name",
    "setting_help",
]


#: similarity.global: the global representation after (head) or before (pooled) the pool MLP
GLOBAL_REPS = ("head", "pooled")
#: spellings of train_probe -> the value they mean
TRAIN_PROBE_ALIASES = {"true": "missing", "false": "false", "no": "false", "none": "false"}
#: the run's settings about probes (shown only by the commands whose analyses may score one)
PROBE_SETTINGS = ("train_probe", "mixed_probes")
#: what a refused value of these keys should have looked like
VALUE_HINTS = {"erf.positions": " (a list of [row, col] pairs: erf.positions=[[0.5,0.5]] for one position)"}
#: settings written otherwise on the command line -> their field (``global`` is a Python keyword)
ALIASES = {"similarity.global": "similarity.global_rep"}


def _help(default: Any, text: str) -> Any:
    """A field with its one-line help (shown by ``cossl-analysis COMMAND --help`` and the docs)."""
    return field(default=default, metadata={"help": text})


def _at_least(section: str, obj: Any, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < minimum:
            raise AnalysisError(f"{section}{name}={value} must be at least {minimum}")


def _one_of(key: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise AnalysisError(f"{key}={value!r} is not one of {', '.join(valid)}")


def _choices(key: str, values: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    """``values`` checked against ``valid``, in ``valid``'s order, once each."""
    for v in values:
        if v not in valid:
            raise AnalysisError(f"{key}: unknown {v!r}; valid: {', '.join(valid)}")
    if not values:
        raise AnalysisError(f"{key} is empty; give at least one of {', '.join(valid)}")
    return tuple(v for v in valid if v in values)


def _numbers(key: str, values: Sequence[float], low: float, high: float, what: str = "") -> tuple[float, ...]:
    """``values`` as sorted unique floats within [low, high] (NaN refused)."""
    out = tuple(sorted({float(v) for v in values}))
    if not out:
        raise AnalysisError(f"{key} is empty")
    bad = [v for v in out if not low <= v <= high]
    if bad:
        raise AnalysisError(f"{key}: {bad[0]:g} must be within {low:g}-{high:g}{what}")
    return out


def _position(p: Any) -> tuple[float, float]:
    """One ``erf.positions`` entry as a (row, col) pair of floats in [0, 1]."""
    try:
        row, col = (float(v) for v in p)
    except (TypeError, ValueError):
        row = col = float("nan")
    if not (0.0 <= row <= 1.0 and 0.0 <= col <= 1.0):
        shown = list(p) if isinstance(p, (list, tuple)) else p
        hint = "" if isinstance(p, (list, tuple)) else VALUE_HINTS["erf.positions"]
        raise AnalysisError(f"erf.positions: a position is [row, col] with both in [0, 1], got {shown}{hint}")
    return row, col


@dataclass
class ErfConfig:
    """Effective receptive fields (Figure 4)."""

    # typed Any for omegaconf: 2.3 (hydra's pin) refuses a tuple inside a container; checked below
    positions: Any = _help(
        DEFAULT_POSITIONS, "normalised (row, col) feature-map positions, e.g. [[0,0],[0.5,0.5]]")
    images: int = _help(16, "first evaluation images whose ERFs are computed and averaged")
    show: int = _help(2, "of those, images drawn")
    chunk_size: int = _help(32, "most (image, position) copies per backward pass; bounds memory")

    def __post_init__(self) -> None:
        positions = [_position(p) for p in self.positions]
        if not positions:
            raise AnalysisError("erf.positions is empty")
        self.positions = tuple(positions)
        _at_least("erf.", self, 1, "images", "show", "chunk_size")


@dataclass
class SimilarityConfig:
    """Global against local similarity (Figure 3B)."""

    mode: str = _help("random", "local similarity of a pair: random (one random position in each image), same "
                      "(mean over same positions) or all (mean over all position pairs)")
    max_pairs: int | None = _help(None, "subsample the image pairs (null: every pair)")
    # written similarity.global=... on the command line (global is a Python keyword: ALIASES)
    global_rep: str = _help("head", "the global representation: head (after the pool MLP, what the probe reads) or "
                            "pooled (the spatial mean of the map, before the pool MLP: the local representations' "
                            "space); also written similarity.global")

    def __post_init__(self) -> None:
        _one_of("similarity.mode", self.mode, ("random", "same", "all"))
        _one_of("similarity.global", self.global_rep, GLOBAL_REPS)
        _at_least("similarity.", self, 2, "max_pairs")  # Pearson C needs two pairs


@dataclass
class PatchDropConfig:
    """Patch dropping."""

    fractions: tuple[float, ...] = _help(DEFAULT_FRACTIONS, "fractions of the local representations to drop")
    mode: str = _help("random", "drop order: random (per image) or position (spatial, see order)")
    order: str = _help("border", "spatial order of mode=position: border (inward) or raster")
    accuracy: bool = _help(True, "probe accuracy too (false: cosine only, no probe or labels needed)")

    def __post_init__(self) -> None:
        if not self.fractions or not all(0.0 <= float(f) <= 1.0 for f in self.fractions):
            raise AnalysisError(f"patch_drop.fractions must lie in [0, 1], got {list(self.fractions)}")
        self.fractions = tuple(float(f) for f in self.fractions)
        _one_of("patch_drop.mode", self.mode, ("random", "position"))
        _one_of("patch_drop.order", self.order, ("border", "raster"))


@dataclass
class InternalCorruptionConfig:
    """Internal noise, zeroing and masking."""

    kinds: tuple[str, ...] = _help(("noise", "mask"), "noise, zero, mask (internal masking)")
    strengths: tuple[float, ...] | None = _help(
        None, "strengths of every kind (null: noise 0-4 x feature std, zero 0-1, mask 0-0.9 fractions)")
    layer: str = _help("auto", "encoder submodule to corrupt, e.g. backbone.layer2; '' = the final feature map; "
                       "auto = a ResNet's layer3, else a transformer's last-but-one block, else ''")

    def __post_init__(self) -> None:
        self.kinds = _choices("internal_corruption.kinds", self.kinds, KINDS)
        if self.strengths is not None:
            self.strengths = _numbers("internal_corruption.strengths", self.strengths, 0.0, float("inf"))
            bounded = [k for k in self.kinds if k != "noise"]
            if bounded and max(self.strengths) > 1:
                raise AnalysisError(f"internal_corruption.strengths for {', '.join(bounded)} are fractions and must "
                                    f"be <= 1, got {list(self.strengths)}")

    def strengths_of(self, kind: str) -> tuple[float, ...]:
        """The strengths swept for ``kind``."""
        return self.strengths if self.strengths is not None else DEFAULT_STRENGTHS[kind]


@dataclass
class RobustnessConfig:
    """Image corruptions, adversarial attacks and the selection of the robustness sweeps."""

    sweeps: tuple[str, ...] = _help(("all",), "sweeps of the robustness and report commands: all, or some of "
                                    "corruption, adversarial, internal_corruption; [] = none (clean accuracy and the "
                                    "large-crop study only)")
    corruptions: tuple[str, ...] = _help(("all",), "all (19), common (the 15 of ImageNet-C), groups (noise, blur, "
                                         "weather, digital, extra) or names")
    severities: tuple[int, ...] = _help(SEVERITIES, "corruption severities, 1-5")
    min_size: int = _help(MIN_LIBRARY_SIZE, "smaller images are enlarged by an integer factor for imagecorruptions")
    eps: tuple[float, ...] = _help((0.5, 1.0, 2.0, 4.0), "L-inf budgets in /255 of pixel values")
    attacks: tuple[str, ...] = _help(ATTACKS, "fgsm, pgd")
    pgd_steps: int = _help(10, "PGD iterations, step 2.5 eps / steps")
    workers: int | None = _help(None, "corruption worker processes (null: every CPU)")
    cache_dir: str | None = _help(None, "corrupted-set cache (null: OUT/corruption_cache)")

    def __post_init__(self) -> None:
        chosen: set[str] = set()
        for part in self.corruptions:
            if part in ("all", "common"):
                chosen.update(COMMON_CORRUPTIONS if part == "common" else CORRUPTIONS)
            elif part in CORRUPTION_GROUPS:
                chosen.update(CORRUPTION_GROUPS[part])
            elif part in CORRUPTIONS:
                chosen.add(part)
            else:
                raise AnalysisError(f"robustness.corruptions: unknown corruption {part!r}; valid: all, common, "
                                    f"{', '.join(CORRUPTION_GROUPS)}, {', '.join(CORRUPTIONS)}")
        if not chosen:
            raise AnalysisError("robustness.corruptions is empty")
        self.corruptions = tuple(n for n in CORRUPTIONS if n in chosen)
        for s in self.severities:
            if s not in SEVERITIES:
                raise AnalysisError(f"robustness.severities: severity {s} is outside 1-5 (imagecorruptions has "
                                    "severities 1 to 5)")
        if not self.severities:
            raise AnalysisError("robustness.severities is empty")
        self.severities = tuple(sorted({int(s) for s in self.severities}))
        self.eps = _numbers("robustness.eps", self.eps, 0.0, 255.0, " (budgets are in /255 of pixel values)")
        self.attacks = _choices("robustness.attacks", self.attacks, ATTACKS)
        _at_least("robustness.", self, 1, "pgd_steps", "workers")
        if self.min_size < MIN_LIBRARY_SIZE:
            raise AnalysisError(f"robustness.min_size={self.min_size} must be at least {MIN_LIBRARY_SIZE} "
                                "(imagecorruptions' minimum)")


@dataclass
class ExternalConfig:
    """How models given by a spec (torchvision:, timm:, MODULE:FUNCTION) are read; the same for each."""

    layer: str | None = _help(None, "module whose output is the map of local representations (null: the last map "
                              "before global pooling; a ViT's patch tokens)")
    global_pool: str | None = _help(None, "global representation: mean (of the positions) or token (a ViT's class "
                                    "token); null: the model's own pooling")
    mean: tuple[float, ...] | None = _help(None, "normalisation mean, 3 values (null: timm's pretrained_cfg, else "
                                           "ImageNet's)")
    std: tuple[float, ...] | None = _help(None, "normalisation std, 3 values (null: as mean)")
    resolution: int | None = _help(None, "evaluation side in pixels (null: a cossl checkpoint's resolution, else the "
                                   "model's own input size)")

    def __post_init__(self) -> None:
        if self.global_pool is not None:
            _one_of("external.global_pool", self.global_pool, ("mean", "token"))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3:
                    raise AnalysisError(f"external.{name} needs 3 values (one per RGB channel), got {list(value)}")
                setattr(self, name, tuple(float(v) for v in value))
        if self.std is not None and min(self.std) <= 0:
            raise AnalysisError(f"external.std must be positive, got {list(self.std)}")
        _at_least("external.", self, 1, "resolution")


@dataclass
class AnalysisConfig:
    """Every setting of every analysis: the run's own, then one section per analysis."""

    images: int = _help(512, "evaluation images, the same for every checkpoint and analysis: a random subset "
                        "drawn with seed (0 = the whole split)")
    seed: int = _help(0, "image subset and every random draw")
    batch_size: int = _help(128, "images per forward pass")
    device: str = _help("auto", "auto, cpu, cuda, cuda:N (auto: cuda when available)")
    threads: int | None = _help(None, "torch threads of this process (null: torch's)")
    train_probe: str = _help("false", "train linear probes by cossl-train linear-probe's recipe (eval.* settings): "
                             "false, missing (true: for models without one) or all (the same protocol for every "
                             "model)")
    mixed_probes: bool = _help(False, "compare models whose probes are of different kinds (online, fast, standard) "
                               "instead of refusing")
    external: ExternalConfig = field(default_factory=ExternalConfig)
    erf: ErfConfig = field(default_factory=ErfConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    patch_drop: PatchDropConfig = field(default_factory=PatchDropConfig)
    internal_corruption: InternalCorruptionConfig = field(default_factory=InternalCorruptionConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)

    def __post_init__(self) -> None:
        if self.images < 0:
            raise AnalysisError(f"images={self.images} must be >= 0 (0 = the whole split)")
        _at_least("", self, 1, "batch_size", "threads")
        # OmegaConf hands a bool given to this str field over as "True" / "False"
        self.train_probe = TRAIN_PROBE_ALIASES.get(str(self.train_probe).lower(), str(self.train_probe))
        _one_of("train_probe", self.train_probe, ("false", "missing", "all"))

    def as_dict(self) -> dict[str, Any]:
        """Plain nested values (for manifests and reports)."""
        return asdict(self)

    def section_of(self, config: type) -> Any:
        """The section of type ``config`` (an analysis's settings)."""
        return getattr(self, section_name(config))


def section_name(config: type) -> str:
    """The field of :class:`AnalysisConfig` that holds the section class ``config``."""
    for f in fields(AnalysisConfig):
        if f.type == config.__name__ or f.type is config:
            return f.name
    raise ValueError(f"{config.__name__} is not a section of AnalysisConfig")


def setting_help(config: type, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted key, help, default) of every plain setting of a section (or of the run itself)."""
    out = []
    for f in fields(config):
        if "help" in f.metadata:
            out.append((prefix + f.name, f.metadata["help"], f.default))
    return out


#: option names of earlier versions -> the key that replaced them
RENAMED: dict[str, str] = {
    "--images": "images", "--seed": "seed", "--device": "device", "--batch-size": "batch_size",
    "--threads": "threads", "--train-probe": "train_probe=missing",
    "--position": "erf.positions", "--erf-images": "erf.images", "--show": "erf.show",
    "--chunk-size": "erf.chunk_size",
    "--sim-mode": "similarity.mode", "--max-pairs": "similarity.max_pairs",
    "--fractions": "patch_drop.fractions", "--drop": "patch_drop.mode", "--order": "patch_drop.order",
    "--no-accuracy": "patch_drop.accuracy=false",
    "--internal-kind": "internal_corruption.kinds", "--internal-strengths": "internal_corruption.strengths",
    "--layer": "internal_corruption.layer",
    "--sweeps": "robustness.sweeps", "--corruptions": "robustness.corruptions",
    "--severities": "robustness.severities", "--min-size": "robustness.min_size", "--eps": "robustness.eps",
    "--attacks": "robustness.attacks", "--pgd-steps": "robustness.pgd_steps", "--workers": "robustness.workers",
    "--cache-dir": "robustness.cache_dir",
}
# the fields of the flat AnalysisOptions of earlier versions
RENAMED.update({
    "erf_images": "erf.images", "positions": "erf.positions", "show": "erf.show", "chunk_size": "erf.chunk_size",
    "sim_mode": "similarity.mode", "max_pairs": "similarity.max_pairs", "fractions": "patch_drop.fractions",
    "drop": "patch_drop.mode", "order": "patch_drop.order", "drop_accuracy": "patch_drop.accuracy",
    "internal_kinds": "internal_corruption.kinds", "internal_strengths": "internal_corruption.strengths",
    "layer": "internal_corruption.layer", "sweeps": "robustness.sweeps", "corruptions": "robustness.corruptions",
    "severities": "robustness.severities", "min_size": "robustness.min_size", "eps_255": "robustness.eps",
    "attacks": "robustness.attacks", "pgd_steps": "robustness.pgd_steps", "workers": "robustness.workers",
    "cache_dir": "robustness.cache_dir",
})


def renamed_hint(name: str) -> str | None:
    """The one-line refusal of an option name of an earlier version, or None for a current one."""
    new = RENAMED.get(name)
    if new is None:
        return None
    example = new if "=" in new else f"{new}=..."
    return f"{name} was replaced by the setting {new.split('=')[0]}: pass {example} (see --help)"


def load_analysis_config(overrides: Sequence[str] = (), base: AnalysisConfig | None = None) -> AnalysisConfig:
    """``base`` (default: the defaults) with ``key=value`` overrides applied and checked."""
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" not in o:
            raise AnalysisError(f"override {o!r} is not of the form key=value")
        hint = renamed_hint(key)
        if hint is not None:
            raise AnalysisError(f"command line: {hint}")
    merged = OmegaConf.structured(base or AnalysisConfig)
    overrides = [ALIASES.get(o.split("=", 1)[0], o.split("=", 1)[0]) + "=" + o.split("=", 1)[1] for o in overrides]
    for o in overrides:  # one at a time: the error names the override at fault
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([o]))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or o.split("=", 1)[0]
            # omegaconf leaves its placeholders in for the items of a typed tuple
            msg = str(e).splitlines()[0].replace("'$VALUE' of type '$VALUE_TYPE'", o.split("=", 1)[1])
            hint = VALUE_HINTS.get(str(key), "")
            raise AnalysisError(f"command line: bad config key or value {key!r}: {msg}{hint}") from None
    cfg = to_object(merged)
    assert isinstance(cfg, AnalysisConfig)
    return cfg
