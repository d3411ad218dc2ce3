"""The analyses, registered by ``@analysis`` on their report section builders (``cossl_analysis.report``).

Each registered analysis is a command of ``cossl-analysis`` (its name with ``-`` for ``_``) and a
section of the report, in registration order; its settings section, probe needs and checks come
with it. ``robustness`` and ``report`` are the commands that run several (:data:`GROUPS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cossl_analysis.errors import AnalysisError

if TYPE_CHECKING:
    from cossl_analysis.config import AnalysisConfig
    from cossl_analysis.report.session import Section, Session

__all__ = ["ANALYSES", "GROUPS", "Analysis", "analysis", "commands", "markdown_index", "plan", "registered"]


@dataclass(frozen=True)
class Analysis:
    """One analysis: what the command, the report, the probe check and the docs need to know.

    Attributes:
        name: the one spelling (module names, settings section, output folder); ``command`` has
            ``-`` for ``_``.
        title: heading of its report section.
        help: one line, for ``--help`` and the docs index.
        build: the report section builder, ``Session -> Section``.
        config: its settings section (a dataclass of ``AnalysisConfig``), or None.
        needs_probe: whether it scores a linear probe (a callable: depending on the settings).
        without_probe: the setting that runs it without a probe, if there is one.
        check: refuses a request before anything runs (one-line ``AnalysisError``), or None.
        groups: the group commands that run it besides ``report``.
        sweep: whether ``robustness.sweeps`` selects it.
        writes: its files under the output folder, for the docs index.
    """

    name: str
    title: str
    help: str
    build: Callable[[Session], Section]
    config: type | None = None
    needs_probe: bool | Callable[[AnalysisConfig], bool] = False
    without_probe: str = ""
    check: Callable[[Session], None] | None = None
    groups: tuple[str, ...] = ()
    sweep: bool = False
    writes: str = ""

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    def probe_needed(self, cfg: AnalysisConfig) -> bool:
        return self.needs_probe(cfg) if callable(self.needs_probe) else bool(self.needs_probe)


#: name -> analysis, in report order (the order the builders register in)
ANALYSES: dict[str, Analysis] = {}
#: the commands that run several analyses -> their help
GROUPS: dict[str, str] = {
    "robustness": "clean, corrupted (ImageNet-C), adversarial (FGSM/PGD) and internal-corruption accuracy and the "
                  "large-crop study (robustness.sweeps selects)",
    "report": "every analysis on the checkpoints, as one self-contained HTML report",
}


def analysis(name: str, *, title: str, help: str, config: type | None = None,
             needs_probe: bool | Callable[[AnalysisConfig], bool] = False, without_probe: str = "",
             check: Callable[[Session], None] | None = None, groups: Sequence[str] = (), sweep: bool = False,
             writes: str = "") -> Callable[[Callable[[Session], Section]], Callable[[Session], Section]]:
    """Register the decorated section builder as the analysis ``name`` (see :class:`Analysis`)."""

    def register(build: Callable[[Session], Section]) -> Callable[[Session], Section]:
        if name in ANALYSES or name in GROUPS:
            raise ValueError(f"analysis {name!r} is registered twice")
        ANALYSES[name] = Analysis(name, title, help, build, config, needs_probe, without_probe, check,
                                  tuple(groups), sweep, writes)
        return build

    return register


def registered() -> list[Analysis]:
    """Every analysis, in report order (importing the report registers them)."""
    import cossl_analysis.report  # noqa: F401

    return list(ANALYSES.values())


def commands() -> dict[str, list[Analysis]]:
    """Command -> the analyses it runs, in report order: one per analysis, then the groups."""
    every = registered()
    out = {a.command: [a] for a in every}
    for group in GROUPS:
        out[group] = [a for a in every if group == "report" or group in a.groups]
    return out


def sweeps() -> list[str]:
    """The analyses ``robustness.sweeps`` selects among."""
    return [a.name for a in registered() if a.sweep]


def plan(command: str, cfg: AnalysisConfig) -> list[Analysis]:
    """The analyses ``command`` runs; in a group, ``robustness.sweeps`` selects among the sweeps."""
    table = commands()
    if command not in table:
        raise ValueError(f"unknown command {command!r}")
    if command not in GROUPS:
        return table[command]
    valid = sweeps()
    chosen = valid if list(cfg.robustness.sweeps) == ["all"] else list(cfg.robustness.sweeps)
    for name in chosen:
        if name not in valid:
            renamed = " (internal is now internal_corruption)" if name == "internal" else ""
            raise AnalysisError(f"robustness.sweeps: unknown sweep {name!r}{renamed}; valid: all, {', '.join(valid)} "
                                "or [] for none")
    return [a for a in table[command] if not a.sweep or a.name in chosen]


def markdown_index() -> str:
    """The table of commands in docs/analysis.md (a test keeps the two equal)."""
    rows = ["| command | what it does | writes |", "|---|---|---|"]
    rows += [f"| `{a.command}` | {a.help} | {a.writes} |" for a in registered()]
    group_writes = {"robustness": "the files of its analyses", "report": "the files of every analysis"}
    rows += [f"| `{g}` | {text} | {group_writes[g]} |" for g, text in GROUPS.items()]
    return "\n".join(rows)


def describe(command: str) -> str:
    """One line on what ``command`` does (its ``--help``)."""
    if command in GROUPS:
        return GROUPS[command]
    (only,) = commands()[command]
    return only.help


def settings_of(command: str) -> list[Any]:
    """The settings sections ``command`` reads (each once, in report order)."""
    out: list[Any] = []
    for a in commands()[command]:
        if a.config is not None and a.config not in out:
            out.append(a.config)
    return out
