"""``cossl-analysis COMMAND CKPT [CKPT ...] --out DIR [--labels ...] [key=value ...]``: the analyses
of trained checkpoints as figures, numbers and an HTML page; one command per registered analysis,
plus ``robustness`` and ``report``. ``cossl-robustness ARGS`` is ``cossl-analysis robustness ARGS``.

Bad input ends with one line on stderr and exit status 2 (COSSL_DEBUG=1: the traceback); Ctrl-C
keeps every finished result and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from cossl_train.errors import USER_ERRORS, report

PROG = "cossl-analysis"
# A config override such as images=64, erf.images=8 or data.root=/x (a path like runs/lam=1/ckpt.pt
# has a slash before its "=" and so is taken for a checkpoint).
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*=")
#: sections of a checkpoint's config that may change for the evaluation images (the model may not)
MODEL_SECTIONS = ("data", "augment", "eval")

DATA_RULE = (
    "Every model is evaluated on the same images: images=N of them (a random subset drawn with seed=S; "
    "0 = all) from the validation split of the FIRST checkpoint's data config (without one, the images that "
    "cossl-train linear-probe holds out by a hash of each file path; external models only: the embedded digit "
    "scenes unless data.* says otherwise), with the data.*, augment.* and eval.* overrides applied. Models sharing "
    "a label (--labels; default: the method's display name, e.g. BYOL, CO-BYOL) are seeds of one group: figures "
    "show one panel or curve per group, tables mean ± std over its seeds and paired differences by seed where groups "
    "meet. Results are kept in OUT/cells.json: rerunning with the same --out recomputes nothing already there."
)


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


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(analysis settings, the evaluation images' data.*/augment.*/eval.*); anything else refused."""
    from cossl_analysis.config import RENAMED, AnalysisConfig
    from cossl_analysis.errors import AnalysisError

    ours = {f.name for f in fields(AnalysisConfig)}
    analysis: list[str] = []
    model: list[str] = []
    for o in overrides:
        key = o.split("=", 1)[0]
        top = key.split(".")[0]
        if top in ours or key in RENAMED:
            analysis.append(o)
        elif top in MODEL_SECTIONS:
            model.append(o)
        else:
            raise AnalysisError(f"override {o!r} not allowed here; only the analysis settings ({', '.join(ours)}) "
                                f"and the evaluation images' {', '.join(MODEL_SECTIONS)} keys can change")
    return analysis, model


def _as_override(value: object) -> str:
    """A default as it is written on the command line: [noise,mask], [0.5,1.0], null, true, auto."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_as_override(v) for v in value) + "]"
    if isinstance(value, str):
        return value or "''"
    return json.dumps(value)


def _settings_text(command: str) -> str:
    """The settings ``command`` reads, ``key=default: help``, one per (wrapped) line."""
    from cossl_analysis.config import PROBE_SETTINGS, AnalysisConfig, ExternalConfig, section_name, setting_help
    from cossl_analysis.registry import commands, settings_of

    uses_probe = any(a.needs_probe is not False for a in commands()[command])
    rows = [r for r in setting_help(AnalysisConfig) if uses_probe or r[0] not in PROBE_SETTINGS]
    rows += setting_help(ExternalConfig, "external.")
    for config in settings_of(command):
        rows += setting_help(config, section_name(config) + ".")
    lines = [textwrap.fill(f"{key}={_as_override(default)}: {text}", 100, initial_indent="  ",
                           subsequent_indent="      ") for key, text, default in rows]
    return "settings (key=value, lists as [a,b]; docs/analysis.md):\n" + "\n".join(lines)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of ``cossl-analysis`` (its subcommands in ``parser.commands``)."""
    from cossl_analysis.registry import commands, describe

    p = _Parser(prog=prog, description="Analyses of trained checkpoints: figures, raw numbers (JSON/CSV/NPY) and an "
                "HTML page in --out. " + DATA_RULE, epilog=f"Run `{prog} COMMAND --help` for a command's settings.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name in commands():
        # cossl-robustness is the robustness command itself: its usage line names no subcommand
        own = {"prog": prog} if prog != PROG and name == "robustness" else {}
        s = sub.add_parser(name, help=describe(name), description=textwrap.fill(f"{describe(name)}. {DATA_RULE}", 100),
                           epilog=_settings_text(name), formatter_class=argparse.RawDescriptionHelpFormatter, **own)
        s.add_argument("inputs", nargs="+", metavar="MODEL|key=value",
                       help="models: cossl checkpoints (files or run folders) or model specs "
                       "(torchvision:NAME[@WEIGHTS], timm:NAME[@WEIGHTS], MODULE:FUNCTION[@WEIGHTS]); settings "
                       "(images=256, erf.images=8) and "
                       "data.*/augment.*/eval.* overrides of the evaluation images (data.root=/data)")
        s.add_argument("--out", type=Path, required=True, help="output folder (rerun with the same folder to resume)")
        s.add_argument("--labels", help="comma-separated labels, one per model; repeated labels make groups of "
                       "seeds (default: method display names, or the spec of an external model)")
        s.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.commands = sub.choices  # type: ignore[attr-defined]
    return p


def refuse_renamed(argv: Sequence[str]) -> None:
    """One line for an option of an earlier version, naming the setting that replaced it."""
    from cossl_analysis.config import renamed_hint
    from cossl_analysis.errors import AnalysisError

    for token in argv:
        hint = renamed_hint(token.split("=", 1)[0]) if token.startswith("--") else None
        if hint is not None:
            raise AnalysisError(hint)


def run(args: argparse.Namespace, argv: Sequence[str]) -> Path:
    """Carry out a parsed command line; returns the HTML page it wrote."""
    from cossl_analysis.config import load_analysis_config
    from cossl_analysis.errors import AnalysisError

    paths, overrides = split_inputs(args.inputs)
    ours, model = split_overrides(overrides)
    config = load_analysis_config(ours)
    if not paths:
        raise AnalysisError("give at least one checkpoint")
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    from cossl_analysis.report.run import run_analyses  # the numerical stack, once the command line is sound

    return run_analyses(args.command, paths, args.out, config, model, labels, not args.no_progress, argv)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        refuse_renamed(argv)
        args = _parse(argv, prog)
    except _UsageError as err:
        command = f" {argv[0]}" if argv and not argv[0].startswith("-") and prog == PROG else ""
        print(f"{prog}: error: {err} (see {prog}{command} --help)", file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        return report(prog, err)
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
        from cossl_analysis.analyses.corruption import shutdown_workers

        shutdown_workers()  # the corruption pool outlives calls on purpose; not the process
    print(page)
    return 0


def robustness_main(argv: Sequence[str] | None = None) -> int:
    """``cossl-robustness ARGS``: the same as ``cossl-analysis robustness ARGS``."""
    return main(["robustness", *(sys.argv[1:] if argv is None else argv)], prog="cossl-robustness")


if __name__ == "__main__":
    sys.exit(main())
