"""``cossl-analysis``: the analyses of trained checkpoints, as figures, numbers and an HTML page.

    cossl-analysis COMMAND CKPT [CKPT ...] --out DIR [options] [data.*=... augment.*=... eval.*=...]

Commands: ``erf``, ``similarity``, ``patch-drop``, ``internal-corruption``, ``robustness`` and
``report`` (all of them). ``cossl-robustness ARGS`` is ``cossl-analysis robustness ARGS``.

Every known failure (missing or foreign checkpoint, missing probe or labels, bad option or
override, ...) ends with one line on stderr and exit status 2; COSSL_DEBUG=1 shows the traceback.
Ctrl-C keeps every finished result and exits with 130.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from cossl_analysis.options import AnalysisOptions
from cossl_train.errors import USER_ERRORS, report

PROG = "cossl-analysis"
# A dotted config override such as data.root=/x or co.lambda=1 (a path like runs/lam=1/ckpt.pt has
# a slash before its "=" and so is taken for a checkpoint).
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")
_D = AnalysisOptions()  # the defaults shown in --help

DATA_RULE = (
    "Every checkpoint is evaluated on the same images: --images of them (a random subset drawn with --seed; "
    "0 = all) from the validation split of the FIRST checkpoint's data config (without one, the 10% of its "
    "training images that cossl-train linear-probe holds out), with the data.*, augment.* and eval.* overrides "
    "given among the checkpoints applied. Checkpoints sharing a label (--labels; default: the method's display "
    "name, e.g. BYOL, CO-BYOL) are seeds of one group: figures show one panel or curve per group, tables mean "
    "± std over its seeds. Results are kept in OUT/cells.json: rerunning with the same --out recomputes nothing "
    "already there."
)
HELPS = {
    "erf": "effective receptive fields of local representations (Figure 4)",
    "similarity": "global against local cosine similarity and Pearson C (Figure 3B)",
    "patch-drop": "global representation and probe accuracy as local representations are dropped",
    "internal-corruption": "probe accuracy under internal noise, zeroing or masking of a feature map",
    "robustness": "clean, corrupted (ImageNet-C), adversarial (FGSM/PGD) and internal-corruption accuracy",
    "report": "every analysis on the checkpoints, as one self-contained HTML report",
}


class _UsageError(Exception):
    """An argparse error, reported as one line like every other bad input."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print the usage block first
        raise _UsageError(message)


def split_inputs(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (checkpoint paths, ``key=value`` overrides), order kept."""
    paths: list[str] = []
    overrides: list[str] = []
    for item in inputs:
        (overrides if _OVERRIDE.match(item) and not Path(item).exists() else paths).append(item)
    return paths, overrides


def _csv(values: Sequence[object]) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="CKPT|key=value",
                   help="checkpoints (files or run folders) and data.*/augment.*/eval.* overrides, e.g. "
                   "data.root=/data")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--images", type=int, default=_D.images, help="evaluation images, the same for every checkpoint "
                   "and analysis (0 = the whole split; default %(default)s)")
    p.add_argument("--labels", help="comma-separated labels, one per checkpoint; repeated labels make groups of seeds "
                   "(default: method display names)")
    p.add_argument("--seed", type=int, default=_D.seed, help="image subset and every random draw (default %(default)s)")
    p.add_argument("--device", default=_D.device, help="auto, cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=_D.batch_size,
                   help="images per forward pass (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    p.add_argument("--train-probe", action="store_true",
                   help="train a linear probe (eval.* settings) for checkpoints that have none")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_erf(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("erf")
    g.add_argument("--position", dest="positions", action="append", metavar="ROW,COL",
                   help="normalised feature-map position (repeatable; default: Figure 4's 0,0 0,0.5 0.5,0 0.5,0.5)")
    g.add_argument("--erf-images", type=int, default=_D.erf_images,
                   help="first evaluation images whose ERFs are computed and averaged (default %(default)s)")
    g.add_argument("--show", type=int, default=_D.show, help="of those, images drawn (default %(default)s)")
    g.add_argument("--chunk-size", type=int, default=_D.chunk_size,
                   help="most (image, position) copies per backward pass; bounds memory (default %(default)s)")


def _add_similarity(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("similarity")
    g.add_argument("--sim-mode", choices=("random", "same", "all"), default=_D.sim_mode,
                   help="local similarity of a pair: random positions (default), same position, mean of all")
    g.add_argument("--max-pairs", type=int, default=None, help="subsample the image pairs")


def _add_patch_drop(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("patch-drop")
    g.add_argument("--fractions", default=_csv(_D.fractions), help="fractions to drop, in [0, 1] (default %(default)s)")
    g.add_argument("--drop", choices=("random", "position"), default=_D.drop, help="random (default) or by position")
    g.add_argument("--order", choices=("border", "raster"), default=_D.order, help="position order (--drop position)")
    g.add_argument("--no-accuracy", action="store_true", help="cosine only (no probe or labels needed)")


def _add_internal(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("internal corruption")
    g.add_argument("--internal-kind", default=_csv(_D.internal_kinds),
                   help="noise, zero, mask (internal masking), comma-separated (default %(default)s)")
    g.add_argument("--internal-strengths", default=None,
                   help="strengths (default: noise 0-4 x feature std, zero 0-1, mask 0-0.9 fractions)")
    g.add_argument("--layer", default=_D.layer, help="encoder submodule to corrupt, e.g. backbone.layer2; '' = the "
                   "final feature map; auto (default) = backbone.layer3 when the encoder has one, else ''")


def _add_robustness(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("robustness")
    g.add_argument("--sweeps", default=_csv(_D.sweeps), help="corruption, adversarial, internal, or none "
                   "(default %(default)s)")
    g.add_argument("--corruptions", default="all",
                   help="all (19), common (the 15 of ImageNet-C), groups (noise, blur, weather, digital, extra) "
                   "or names")
    g.add_argument("--severities", default=_csv(_D.severities), help="1-5 (default %(default)s)")
    g.add_argument("--min-size", type=int, default=_D.min_size,
                   help="smaller images are enlarged by an integer factor for imagecorruptions (default %(default)s)")
    g.add_argument("--eps", default=_csv(_D.eps_255),
                   help="L-inf budgets in /255 of pixel values (default %(default)s)")
    g.add_argument("--attacks", default=_csv(_D.attacks), help="fgsm, pgd (default %(default)s)")
    g.add_argument("--pgd-steps", type=int, default=_D.pgd_steps,
                   help="PGD iterations, step 2.5 eps / steps (default %(default)s)")
    g.add_argument("--workers", type=int, default=None, help="corruption worker processes (default: every CPU)")
    g.add_argument("--cache-dir", type=Path, default=None, help="corrupted-set cache (default OUT/corruption_cache)")


GROUPS: dict[str, list[Callable[[argparse.ArgumentParser], None]]] = {
    "erf": [_add_erf],
    "similarity": [_add_similarity],
    "patch-drop": [_add_patch_drop],
    "internal-corruption": [_add_internal],
    "robustness": [_add_internal, _add_robustness],
    "report": [_add_erf, _add_similarity, _add_patch_drop, _add_internal, _add_robustness],
}


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of ``cossl-analysis`` (its subcommands in ``parser.commands``)."""
    p = _Parser(prog=prog, description="Analyses of trained checkpoints: figures, raw numbers (JSON/CSV/NPY) and an "
                "HTML page in --out. " + DATA_RULE, epilog=f"Run `{prog} COMMAND --help` for a command's options.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, adders in GROUPS.items():
        s = sub.add_parser(name, help=HELPS[name], description=f"{HELPS[name]}. {DATA_RULE}")
        _add_common(s)
        for add in adders:
            add(s)
    p.commands = sub.choices  # type: ignore[attr-defined]
    return p


def options_from(args: argparse.Namespace) -> AnalysisOptions:
    """The parsed command line as :class:`AnalysisOptions` (one-line errors for bad values)."""
    from cossl_analysis import options as O

    given = vars(args)
    kw: dict[str, object] = {k: given[k] for k in ("images", "seed", "batch_size", "device", "threads", "train_probe")}
    parsers = {"positions": lambda v: O.parse_positions(";".join(v)), "fractions": O.parse_fractions,
               "internal_kind": O.parse_internal_kinds, "internal_strengths": O.parse_strengths,
               "sweeps": O.parse_sweeps, "corruptions": O.parse_corruptions, "severities": O.parse_severities,
               "eps": O.parse_eps, "attacks": O.parse_attacks}
    renamed = {"internal_kind": "internal_kinds", "eps": "eps_255", "no_accuracy": "drop_accuracy"}
    plain = ("erf_images", "show", "chunk_size", "sim_mode", "max_pairs", "drop", "order", "layer", "min_size",
             "pgd_steps", "workers", "cache_dir")
    for name, value in given.items():
        if value is None or name not in (*parsers, *plain, "no_accuracy"):
            continue
        if name == "no_accuracy":
            value = not value
        elif name in parsers:
            value = parsers[name](value)
        kw[renamed.get(name, name)] = value
    return AnalysisOptions(**kw)  # type: ignore[arg-type]


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """Carry out a parsed command line; returns the HTML page it wrote."""
    from cossl_analysis.errors import AnalysisError
    from cossl_analysis.report import run_analyses

    options = options_from(args)
    paths, overrides = split_inputs(args.inputs)
    if not paths:
        raise AnalysisError("give at least one checkpoint")
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    return run_analyses(args.command, paths, args.out, options, overrides, labels, not args.no_progress, argv)


def _parse(argv: list[str], prog: str) -> argparse.Namespace:
    parser = build_parser(prog)
    commands = parser.commands  # type: ignore[attr-defined]
    if argv and argv[0] in commands:  # options may come between the checkpoints and the overrides
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point of ``cossl-analysis``; returns the exit status (0; 2 on bad input; 130 on Ctrl-C)."""
    from cossl_analysis.corruptions import shutdown_workers

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv, prog)
    except _UsageError as err:
        command = f" {argv[0]}" if argv and argv[0] in GROUPS and prog == PROG else ""
        print(f"{prog}: error: {err} (see {prog}{command} --help)", file=sys.stderr)
        return 2
    except SystemExit as err:  # --help
        return int(err.code or 0)
    try:
        page = run(args, argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished results are kept in {args.out / 'cells.json'}: rerun the same "
              "command to resume", file=sys.stderr)
        return 130
    except (*USER_ERRORS, PermissionError) as err:  # PermissionError: an unwritable --out
        return report(prog, err)
    finally:
        shutdown_workers()  # the corruption pool outlives calls on purpose; not the process
    print(page)
    return 0


def robustness_main(argv: Sequence[str] | None = None) -> int:
    """``cossl-robustness ARGS``: the same as ``cossl-analysis robustness ARGS``."""
    return main(["robustness", *(sys.argv[1:] if argv is None else argv)], prog="cossl-robustness")


if __name__ == "__main__":
    sys.exit(main())
