"""``cossl-analysis``: run the analyses of trained checkpoints and write figures and numbers.

    cossl-analysis erf CKPT [CKPT ...] [--out DIR] [--images N] [data.root=...]
    cossl-analysis similarity CKPT [CKPT ...]
    cossl-analysis patch-drop CKPT [CKPT ...]
    cossl-analysis internal-corruption CKPT [CKPT ...] [--kind noise|zero] [--layer NAME]
    cossl-analysis all CKPT [CKPT ...]

Several checkpoints are compared side by side, labelled by the method of their config (or by
``--labels``). Every checkpoint is analysed on ``--images`` images of the validation split of its
own data config (``key=value`` overrides of the data/augment/eval sections change it, e.g.
``data.root=/data/imagenet100``). Files go under ``--out``, one folder per analysis, and
``manifest.json`` there records what ran on which checkpoints and images.

Every known failure (missing or foreign checkpoint, missing probe or labels, bad override, ...)
ends with one line on stderr and exit status 2; set COSSL_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # the heavy stack is imported inside the commands, after the arguments parse
    import numpy as np
    import torch

    from cossl_analysis.loading import EvalData, Pretrained

PROG = "cossl-analysis"
COMMANDS = ("erf", "similarity", "patch-drop", "internal-corruption")

# A dotted config override such as data.root=/x or co.lambda=1 (a path like runs/lam=1/ckpt.pt has
# a slash before its "=" and so is taken for a checkpoint).
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


class AnalysisError(ValueError):
    """A request that cannot be carried out as asked; the message is one line."""


@dataclass
class Model:
    """One checkpoint ready for the analyses.

    Attributes:
        label: display name (method name, made unique, or the user's label).
        slug: ``label`` made safe as a folder name.
        pretrained: the loaded checkpoint (encoder, probe, config).
        data: its evaluation images.
    """

    label: str
    slug: str
    pretrained: Pretrained
    data: EvalData

    @property
    def path(self) -> Path:
        return self.pretrained.path


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def split_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (checkpoint paths, ``key=value`` overrides), order kept."""
    paths: list[str] = []
    overrides: list[str] = []
    for item in inputs:
        is_override = bool(_OVERRIDE.match(item)) and not Path(item).exists()
        (overrides if is_override else paths).append(item)
    return paths, overrides


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else must be a usable torch device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise AnalysisError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AnalysisError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return device


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def _unique(names: list[str], alternatives: list[str]) -> list[str]:
    """Make ``names`` unique: a repeated name gets its alternative appended, then a counter."""
    out = [f"{n} ({alt})" if names.count(n) > 1 else n for n, alt in zip(names, alternatives, strict=True)]
    repeated = {n for n in out if out.count(n) > 1}  # still repeated, e.g. the same file twice
    seen: dict[str, int] = {}
    for k, name in enumerate(out):
        if name in repeated:  # number every copy
            seen[name] = seen.get(name, 0) + 1
            out[k] = f"{name} #{seen[name]}"
    return out


def load_models(
    paths: Sequence[str | Path],
    overrides: Sequence[str] = (),
    labels: Sequence[str] | None = None,
    num_images: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[Model]:
    """Load checkpoints with their evaluation images (see ``cossl_analysis.loading.eval_data``).

    Args:
        paths: checkpoint files (or run folders holding ``checkpoint.pt``).
        overrides: ``key=value`` changes to the data/augment/eval sections of every config.
        labels: display names, one per checkpoint; default: the method name of each config (a
            repeated name gets the run folder appended).
        num_images: evaluation images per checkpoint.
        seed: seed of the image subset.
        device: where the models go.

    Each model's ``pretrained.config`` is returned with the overrides applied, so that it describes
    the images actually analysed.
    """
    from cossl_analysis.loading import eval_data, load_checkpoint
    from cossl_train.config import apply_overrides

    if not paths:
        raise AnalysisError("no checkpoint given")
    if labels is not None and len(labels) != len(paths):
        raise AnalysisError(f"--labels gives {len(labels)} label(s) for {len(paths)} checkpoint(s)")
    loaded = [load_checkpoint(p, device) for p in paths]
    if labels is None:
        names = [pre.config.method.name for pre in loaded]
        labels = _unique(names, [pre.path.parent.name or str(pre.path) for pre in loaded])
    elif len(set(labels)) != len(labels):
        raise AnalysisError(f"--labels repeats a label: {', '.join(labels)}")
    slugs = _unique([_slug(lab) for lab in labels], [str(k + 1) for k in range(len(labels))])
    slugs = [_slug(s) for s in slugs]
    models = []
    for pre, label, slug in zip(loaded, labels, slugs, strict=True):
        # Data and evaluation settings may change (another data.root, say); the model may not.
        pre.config = apply_overrides(pre.config, list(overrides), sections=("data", "augment", "eval"))
        models.append(Model(label, slug, pre, eval_data(pre.config, num_images, seed)))
    return models


def require_probes(models: Sequence[Model], what: str, alternative: str = "") -> None:
    """Raise unless every model has a linear probe and labelled images its probe can score.

    ``what`` names the analysis in the message; ``alternative`` (e.g. "pass --no-accuracy") is
    offered as the other way out.
    """
    other = f", or {alternative}" if alternative else ""
    for m in models:
        if m.pretrained.probe is None:
            raise AnalysisError(
                f"{m.path} has no linear probe, which {what} needs; train one with "
                f"`cossl-train linear-probe {m.path}`{other}"
            )
        cfg = m.pretrained.config.data
        if m.data.labels is None:
            where = f"data.root={cfg.root}" if cfg.root else f"data.dataset={cfg.dataset}"
            raise AnalysisError(
                f"{what} needs labelled images, but the {m.data.split} images of {where} are unlabelled "
                f"(point data.root / data.val_root at a folder with class subfolders{other})"
            )
        classes = m.pretrained.probe.out_features
        top = int(m.data.labels.max())
        if top >= classes:
            raise AnalysisError(
                f"{m.label}: the images have label {top} but the probe of {m.path} has {classes} classes; "
                f"train a probe on this data with `cossl-train linear-probe {m.path} data.root=...`"
            )


# --------------------------------------------------------------------------------------------
# analyses
# --------------------------------------------------------------------------------------------


def _rel(path: Path, out: Path) -> str:
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


def _erf_stats(mean_map: np.ndarray) -> dict[str, Any]:
    """Scalar summary of one averaged ERF map (H, W): mass, peak, centroid and RMS radius (pixels).

    The RMS radius (square root of the gradient-weighted mean squared distance to the centroid)
    gives one number per position for comparing ERF sizes across models.
    """
    import numpy as np

    total = float(mean_map.sum())
    rows, cols = np.indices(mean_map.shape, dtype=np.float64)
    if total <= 0:
        return {"total": total, "peak": 0.0, "centroid_px": None, "rms_radius_px": None}
    w = mean_map.astype(np.float64) / total
    cr, cc = float((w * rows).sum()), float((w * cols).sum())
    radius = math.sqrt(float((w * ((rows - cr) ** 2 + (cols - cc) ** 2)).sum()))
    return {"total": total, "peak": float(mean_map.max()), "centroid_px": [cr, cc], "rms_radius_px": radius}


def _plot_erf_grid(means: dict[str, np.ndarray], positions: Sequence[tuple[float, float]], path: Path) -> None:
    """One row per model, one column per position: the image-averaged ERFs, each scaled to its max."""
    from matplotlib.figure import Figure

    n_rows, n_cols = len(means), len(positions)
    fig = Figure(figsize=(2.2 * n_cols + 0.6, 2.2 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (label, maps) in enumerate(means.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            peak = float(maps[c].max())
            ax.imshow(maps[c] / peak if peak > 0 else maps[c], cmap="inferno", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"({positions[c][0]:g}, {positions[c][1]:g})", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle("effective receptive fields, averaged over images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_erf(
    models: Sequence[Model],
    out: Path,
    positions: Sequence[tuple[float, float]] | None = None,
    show: int = 4,
    chunk_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """ERFs (Figure 4) of every model on its evaluation images.

    Writes, under ``out/erf``: per model ``<slug>/erf.png`` (the first ``show`` images with their own
    ERFs; raw maps in ``erf.npz``, peaks and totals in ``erf.json``) and ``<slug>/erf_mean.npy``
    ((P, H, W) maps averaged over all images); for all models ``erf_mean.png`` (side by side) and
    ``erf_mean.json`` (per model and position: feature-map index, mass, centroid, RMS radius).
    """
    import numpy as np
    import torch

    from cossl_analysis.erf import DEFAULT_POSITIONS, erf_map, plot_erf, position_indices

    positions = list(DEFAULT_POSITIONS if positions is None else positions)
    folder = out / "erf"
    files: list[Path] = []
    means: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    for m in models:
        x = m.data.images
        maps = erf_map(m.pretrained.encoder, x, positions, average=False, chunk_size=chunk_size,
                       progress=progress)
        mean = maps.mean(axis=0)
        k = max(1, min(show, len(x)))
        png = folder / m.slug / "erf.png"
        plot_erf(x[:k], maps[:k], png, positions=positions)
        np.save(folder / m.slug / "erf_mean.npy", mean)
        files += [png, png.with_suffix(".npz"), png.with_suffix(".json"), folder / m.slug / "erf_mean.npy"]
        with torch.no_grad():
            _, _, h, w = m.pretrained.encoder(x[:1].to(_device_of(m))).shape
        means[m.label] = mean
        summary[m.label] = {
            "num_images": len(x),
            "image_size": list(x.shape[2:]),
            "feature_map": [h, w],
            "positions": [
                {"position": list(p), "index": list(ij), **_erf_stats(mean[t])}
                for t, (p, ij) in enumerate(zip(positions, position_indices(positions, h, w), strict=True))
            ],
        }
    folder.mkdir(parents=True, exist_ok=True)
    _plot_erf_grid(means, positions, folder / "erf_mean.png")
    _write_json(summary, folder / "erf_mean.json")
    files += [folder / "erf_mean.png", folder / "erf_mean.json"]
    return {"files": [_rel(f, out) for f in files], "results": summary}


def _device_of(m: Model) -> torch.device:
    from cossl_analysis._utils import model_device

    return model_device(m.pretrained.encoder)


def run_similarity(
    models: Sequence[Model],
    out: Path,
    mode: str = "random",
    max_pairs: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Local vs global similarity (Figure 3B), all models in one scatter.

    Writes ``out/similarity/similarity.png``, ``.csv`` (every pair: label, i, j, global, local) and
    ``.json`` (per model: Pearson C, intra-image local similarity, ...).
    """
    from cossl_analysis.similarity import plot_similarity, similarity_analysis

    for m in models:
        if len(m.data) < 2:
            raise AnalysisError(f"the similarity analysis needs at least 2 images, {m.label} has {len(m.data)}")
    results = {
        m.label: similarity_analysis(m.pretrained.encoder, m.data.images, mode=mode,  # type: ignore[arg-type]
                                     seed=seed, max_pairs=max_pairs, batch_size=batch_size, progress=progress)
        for m in models
    }
    png = out / "similarity" / "similarity.png"
    summary = plot_similarity(results, png, seed=seed)
    return {"files": [_rel(p, out) for p in (png, png.with_suffix(".csv"), png.with_suffix(".json"))],
            "results": summary}


def run_patch_drop(
    models: Sequence[Model],
    out: Path,
    fractions: Sequence[float] | None = None,
    mode: str = "random",
    order: str = "border",
    accuracy: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Cosine to the intact global representation (and probe accuracy) as local representations drop.

    Writes ``out/patch_drop/patch_drop.png`` and ``.json``. With ``accuracy`` every model needs a
    probe and labelled images.
    """
    from cossl_analysis.patch_drop import DEFAULT_FRACTIONS, patch_drop_analysis, plot_patch_drop

    if accuracy:
        require_probes(models, "probe accuracy under patch dropping", "pass accuracy=False")
    results = {}
    for m in models:
        results[m.label] = patch_drop_analysis(
            m.pretrained.encoder, m.data.images,
            fractions=list(DEFAULT_FRACTIONS if fractions is None else fractions),
            mode=mode, order=order, seed=seed,  # type: ignore[arg-type]
            probe=m.pretrained.probe if accuracy else None,
            labels=m.data.labels if accuracy else None,
            batch_size=batch_size, progress=progress,
        )
    png = out / "patch_drop" / "patch_drop.png"
    runs = plot_patch_drop(results, png)
    return {"files": [_rel(p, out) for p in (png, png.with_suffix(".json"))], "results": runs}


def check_layer(models: Sequence[Model], layer: str) -> None:
    """Raise, listing some valid names, unless every encoder has a submodule called ``layer``."""
    for m in models:
        names = [n for n, _ in m.pretrained.encoder.named_modules()]
        if layer not in names:
            shallow = [n for n in names if n and n.count(".") <= 1]
            hint = ", ".join(["'' (the output)", *shallow[:12]]) + (", ..." if len(shallow) > 12 else "")
            raise AnalysisError(f"the encoder of {m.label} has no module {layer!r}; names include {hint}")


def run_internal_corruption(
    models: Sequence[Model],
    out: Path,
    kind: str = "noise",
    layer: str = "",
    strengths: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Probe accuracy against the strength of noise/zeroing applied to ``layer``'s output.

    Writes ``out/internal_corruption/<kind>_<layer or output>.png`` and ``.json`` (so sweeps of other
    kinds and layers sit side by side instead of overwriting each other).
    """
    from cossl_analysis.internal_corruption import internal_corruption_sweep, plot_internal_corruption

    require_probes(models, "the internal-corruption sweep")
    check_layer(models, layer)
    results = {}
    for m in models:
        assert m.pretrained.probe is not None and m.data.labels is not None  # require_probes
        results[m.label] = internal_corruption_sweep(
            m.pretrained.encoder, m.pretrained.probe, m.data.images, m.data.labels, module_name=layer,
            kind=kind, strengths=strengths, seed=seed, batch_size=batch_size,  # type: ignore[arg-type]
            progress=progress,
        )
    where = re.sub(r"[^A-Za-z0-9_-]+", "-", layer) if layer else "output"  # no dots: they read as suffixes
    png = out / "internal_corruption" / f"{kind}_{where}.png"
    runs = plot_internal_corruption(results, png)
    return {"files": [_rel(p, out) for p in (png, png.with_suffix(".json"))], "results": runs}


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def _write_json(obj: Any, path: Path) -> None:
    from cossl_analysis._utils import write_json

    write_json(obj, path)


def _update_manifest(out: Path, command: str, record: dict[str, Any]) -> Path:
    """Record one analysis run in ``out/manifest.json`` (earlier runs of other analyses kept)."""
    path = out / "manifest.json"
    manifest: dict[str, Any] = {}
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = {}  # a damaged manifest is rewritten rather than failing the run
    if not isinstance(manifest.get("analyses"), dict):
        manifest = {"analyses": {}}
    manifest["analyses"][command] = record
    _write_json(manifest, path)
    return path


def _describe_models(models: Sequence[Model]) -> list[dict[str, Any]]:
    out = []
    for m in models:
        cfg = m.pretrained.config
        out.append({
            "label": m.label,
            "checkpoint": str(m.path),
            "method": cfg.method.name,
            "backbone": cfg.backbone.name,
            "epoch": m.pretrained.epoch,
            "probe": m.pretrained.probe is not None,
            "data": {
                "dataset": cfg.data.dataset,
                "root": cfg.data.root,
                "split": m.data.split,
                "resolution": cfg.augment.resolution,
                "num_images": len(m.data),
                "available": m.data.available,
                "skipped_unreadable": m.data.skipped,
                "labelled": m.data.labels is not None,
                "indices": m.data.indices,
            },
        })
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _headline(command: str, label: str, r: dict[str, Any]) -> str:
    """One line of key numbers per model, for the terminal."""
    if command == "erf":
        radii = ", ".join(_fmt(p["rms_radius_px"]) for p in r["positions"])
        return f"{label}: ERF RMS radius (px) per position {radii}"
    if command == "similarity":
        return f"{label}: C = {_fmt(r['pearson_c'])}, intra-image local similarity {_fmt(r['intra_local_mean'])}"
    if command == "patch-drop":
        line = f"{label}: cosine at f={r['fractions'][-1]:g} {_fmt(r['cosine_mean'][-1])}"
        if r.get("accuracy") is not None:
            line += f", accuracy {_fmt(r['accuracy'][0])} (f={r['fractions'][0]:g}) -> " \
                    f"{_fmt(r['accuracy'][-1])} (f={r['fractions'][-1]:g})"
        return line
    return (f"{label}: accuracy {_fmt(r['accuracy'][0])} (s={r['strengths'][0]:g}) -> "
            f"{_fmt(r['accuracy'][-1])} (s={r['strengths'][-1]:g}), {r['kind']} at {r['module'] or 'output'}")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _position(text: str) -> tuple[float, float]:
    values = _floats(text)
    if len(values) != 2 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"a position is ROW,COL with both in [0, 1], got {text!r}")
    return values[0], values[1]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other error of this tool."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="CKPT|key=value",
                   help="checkpoints (files or run folders) and data/augment/eval overrides, e.g. data.root=/data")
    p.add_argument("--out", type=Path, default=Path("runs/analysis"), help="output folder (default: %(default)s)")
    p.add_argument("--images", type=_positive, default=64,
                   help="evaluation images per checkpoint (default: %(default)s)")
    p.add_argument("--labels", help="comma-separated display names, one per checkpoint (default: method names)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset and the random draws")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--batch-size", type=_positive, default=64, help="images per forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_erf(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("erf")
    g.add_argument("--position", dest="positions", type=_position, action="append", metavar="ROW,COL",
                   help="normalised feature-map position (repeatable; default: Figure 4's "
                        "0,0 0,0.5 0.5,0 0.5,0.5)")
    g.add_argument("--show", type=_positive, default=4, help="images drawn in each erf.png (default: %(default)s)")
    g.add_argument("--chunk-size", type=_positive, default=32, help="copies per backward pass (bounds memory)")


def _add_similarity(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("similarity")
    g.add_argument("--sim-mode", choices=("random", "same", "all"), default="random",
                   help="local similarity of a pair: random positions (default), same position, mean of all")
    g.add_argument("--max-pairs", type=_positive, default=None, help="subsample the image pairs")


def _add_patch_drop(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("patch-drop")
    g.add_argument("--fractions", type=_floats, default=None, help="comma-separated fractions in [0, 1]")
    g.add_argument("--drop", choices=("random", "position"), default="random",
                   help="drop at random (default) or by position")
    g.add_argument("--order", choices=("border", "raster"), default="border", help="position order (--drop position)")
    g.add_argument("--no-accuracy", action="store_true", help="cosine only (no probe or labels needed)")


def _add_internal(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("internal-corruption")
    g.add_argument("--kind", choices=("noise", "zero"), default="noise", help="noise (default) or zeroing")
    g.add_argument("--layer", default="",
                   help="encoder submodule to corrupt, e.g. backbone.layer3 (default: the final feature map)")
    g.add_argument("--strengths", type=_floats, default=None, help="comma-separated strengths")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Run the analyses of trained checkpoints; write figures (PNG) and numbers.",
                epilog="Run `cossl-analysis COMMAND --help` for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    adders: dict[str, list[Callable[[argparse.ArgumentParser], None]]] = {
        "erf": [_add_erf],
        "similarity": [_add_similarity],
        "patch-drop": [_add_patch_drop],
        "internal-corruption": [_add_internal],
        "all": [_add_erf, _add_similarity, _add_patch_drop, _add_internal],
    }
    helps = {
        "erf": "effective receptive fields of local representations (Figure 4)",
        "similarity": "local vs global cosine similarity and Pearson C (Figure 3B)",
        "patch-drop": "global representation and probe accuracy as local representations are dropped",
        "internal-corruption": "probe accuracy under noise or zeroing inside the encoder",
        "all": "all four analyses",
    }
    for name, adds in adders.items():
        s = sub.add_parser(name, help=helps[name], description=helps[name])
        _add_common(s)
        for add in adds:
            add(s)
    return p


def _run_one(command: str, models: Sequence[Model], args: argparse.Namespace, progress: bool) -> dict[str, Any]:
    if command == "erf":
        return run_erf(models, args.out, args.positions, args.show, args.chunk_size, progress)
    if command == "similarity":
        return run_similarity(models, args.out, args.sim_mode, args.max_pairs, args.seed, args.batch_size, progress)
    if command == "patch-drop":
        return run_patch_drop(models, args.out, args.fractions, args.drop, args.order, not args.no_accuracy,
                              args.seed, args.batch_size, progress)
    return run_internal_corruption(models, args.out, args.kind, args.layer, args.strengths, args.seed,
                                   args.batch_size, progress)


def _check_request(commands: Sequence[str], models: Sequence[Model], args: argparse.Namespace) -> None:
    """Everything that can be refused is refused before the first (possibly long) analysis runs."""
    if "similarity" in commands and args.images < 2:
        raise AnalysisError("the similarity analysis needs --images 2 or more")
    if "internal-corruption" in commands:
        require_probes(models, "the internal-corruption sweep")
        check_layer(models, args.layer)
    if "patch-drop" in commands and not args.no_accuracy:
        require_probes(models, "probe accuracy under patch dropping", "pass --no-accuracy")
    for name in ("fractions", "strengths"):
        values = getattr(args, name, None)
        if values is not None and not values:
            raise AnalysisError(f"--{name} is empty")
    if getattr(args, "fractions", None) and not all(0.0 <= f <= 1.0 for f in args.fractions):
        raise AnalysisError(f"--fractions must lie in [0, 1], got {args.fractions}")
    strengths = getattr(args, "strengths", None)
    if strengths and (min(strengths) < 0 or (args.kind == "zero" and max(strengths) > 1)):
        raise AnalysisError(f"--strengths for --kind {args.kind} must lie in "
                            f"{'[0, 1]' if args.kind == 'zero' else '[0, inf)'}, got {strengths}")


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Carry out a parsed command line; return {analysis: {"files": [...], "results": {...}}}."""
    from tqdm.auto import tqdm

    progress = not args.no_progress
    paths, overrides = split_inputs(args.inputs)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    device = resolve_device(args.device)
    models = load_models(paths, overrides, labels, args.images, args.seed, device)
    commands = list(COMMANDS) if args.command == "all" else [args.command]
    _check_request(commands, models, args)

    for m in models:
        cfg = m.pretrained.config
        short = f" (fewer than --images {args.images}: the split is smaller)" if len(m.data) < args.images else ""
        print(f"{m.label}: {m.path} ({cfg.method.name}, epoch {m.pretrained.epoch}), {len(m.data)} of "
              f"{m.data.available} {m.data.split} images of {cfg.data.dataset} at {cfg.augment.resolution} px{short}")
    args.out.mkdir(parents=True, exist_ok=True)
    described = _describe_models(models)
    outcome: dict[str, dict[str, Any]] = {}
    for command in tqdm(commands, desc=PROG, disable=not progress or len(commands) == 1):
        res = _run_one(command, models, args, progress)
        options = {k: v for k, v in vars(args).items() if k not in ("inputs", "command", "no_progress")}
        _update_manifest(args.out, command, {
            "argv": getattr(args, "argv", None) or sys.argv[1:],
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if k != "argv"},
            "overrides": overrides,
            "device": str(device),
            "models": described,
            "files": res["files"],
        })
        outcome[command] = res
        for m in models:
            print(_headline(command, m.label, res["results"][m.label]))
        print(f"{command}: wrote {', '.join(res['files'])} under {args.out}")
    return outcome


def _known_errors() -> tuple[type[BaseException], ...]:
    from cossl_train.checkpoint import CheckpointError
    from cossl_train.config import ConfigError

    # ValueError covers AnalysisError, CheckpointError and ConfigError; OSError an unwritable --out.
    return (AnalysisError, CheckpointError, ConfigError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cossl-analysis``; returns the exit status (0, or 2 on a known error)."""
    try:
        args = build_parser().parse_args(None if argv is None else list(argv))
    except SystemExit as e:  # --help or a usage error (already printed on one line)
        return e.code if isinstance(e.code, int) else 2
    args.argv = None if argv is None else list(argv)
    try:
        run(args)
    except _known_errors() as e:
        if os.environ.get("COSSL_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
