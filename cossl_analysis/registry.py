"""The analyses: the one list (:data:`ANALYSES`) from which the commands of ``cossl-analysis``, the
report's sections and their order, the settings each command reads and the docs index derive.

Each entry names an analysis (its command is the name with ``-`` for ``_``), its title, help, settings
section and probe needs; its report section builder registers itself under the same name with
``@section(name)`` in ``cossl_analysis/report/<name>.py``. The list is declared here, apart from the
builders, so that ``--help`` and argument errors answer without importing torch, matplotlib and the
rest of the stack: the builders load only when a command runs. ``robustness`` and ``report`` are the
commands that run several (:data:`GROUPS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cossl_analysis.config import (
    ErfConfig,
    InternalCorruptionConfig,
    PatchDropConfig,
    RobustnessConfig,
    SimilarityConfig,
)
from cossl_analysis.errors import AnalysisError

if TYPE_CHECKING:
    from cossl_analysis.config import AnalysisConfig
    from cossl_analysis.report.session import Section, Session

__all__ = ["ANALYSES", "GROUPS", "Analysis", "commands", "markdown_index", "plan", "registered", "section"]

Builder = Callable[["Session"], "Section"]
Check = Callable[["Session"], None]


@dataclass(frozen=True)
class Analysis:
    """One analysis: what the command, the report, the probe check and the docs need to know.

    Attributes:
        name: the one spelling (module names, settings section, output folder); ``command`` has
            ``-`` for ``_``.
        title: heading of its report section.
        help: one line, for ``--help`` and the docs index.
        config: its settings section (a dataclass of ``AnalysisConfig``), or None.
        needs_probe: whether it scores a linear probe (a callable: depending on the settings).
        without_probe: the setting that runs it without a probe, if there is one.
        groups: the group commands that run it besides ``report``.
        sweep: whether ``robustness.sweeps`` selects it.
        writes: its files under the output folder, for the docs index.
    """

    name: str
    title: str
    help: str
    config: type | None = None
    needs_probe: bool | Callable[[AnalysisConfig], bool] = False
    without_probe: str = ""
    groups: tuple[str, ...] = ()
    sweep: bool = False
    writes: str = ""

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    @property
    def build(self) -> Builder:
        """The report section builder, ``Session -> Section`` (loads the report on first use)."""
        return _registered_section(self.name)[0]

    @property
    def check(self) -> Check | None:
        """What refuses a request before anything runs (a one-line ``AnalysisError``), or None."""
        return _registered_section(self.name)[1]

    def probe_needed(self, cfg: AnalysisConfig) -> bool:
        return self.needs_probe(cfg) if callable(self.needs_probe) else bool(self.needs_probe)


#: name -> analysis, in report order
ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("similarity", "Global against local similarity (Figure 3B)", config=SimilarityConfig,
             help="global against local cosine similarity and Pearson C (Figure 3B)",
             writes="`similarity/similarity.png`, `similarity/similarity.csv` (every pair), "
                    "`similarity/similarity.json`"),
    Analysis("erf", "Effective receptive fields (Figure 4)", config=ErfConfig,
             help="effective receptive fields of local representations (Figure 4)",
             writes="`erf/figure4.png`, `erf/erf_mean.png`, `erf/erf.json`, `erf/<label>_maps.npy`"),
    Analysis("patch_drop", "Patch dropping", config=PatchDropConfig,
             needs_probe=lambda cfg: cfg.patch_drop.accuracy, without_probe="patch_drop.accuracy=false",
             help="global representation and probe accuracy as local representations are dropped",
             writes="`patch_drop/patch_drop.png`, `patch_drop/patch_drop.json`"),
    Analysis("co_objective", "The CO objective",
             help="the CO term's own objective on held-out images (each position's local query against the other "
                  "view's global targets), and Pearson C and patch dropping in the heads' space",
             writes="`co_objective/co_objective.png`, `co_objective/co_objective.json`"),
    Analysis("internal_corruption", "Internal corruption and internal masking", config=InternalCorruptionConfig,
             needs_probe=True, groups=("robustness",), sweep=True,
             help="probe accuracy under internal noise, zeroing or masking of a feature map",
             writes="`internal_corruption/internal.png`, `internal_corruption/internal.json`, "
                    "`robustness/robustness.csv`"),
    Analysis("corruption", "Image corruptions (ImageNet-C)", config=RobustnessConfig, needs_probe=True,
             groups=("robustness",), sweep=True,
             help="clean and corrupted accuracy under the 19 corruptions of imagecorruptions (ImageNet-C)",
             writes="`robustness/corruption.png`, `robustness/corruption_by_name.png`, `robustness/corruption.json`, "
                    "`robustness/robustness.csv`"),
    Analysis("adversarial", "Adversarial attacks (FGSM, PGD)", config=RobustnessConfig, needs_probe=True,
             groups=("robustness",), sweep=True, help="accuracy under FGSM and PGD (L-inf) at small budgets",
             writes="`robustness/adversarial.png`, `robustness/adversarial.json`, `robustness/robustness.csv`"),
    Analysis("large_crop", "Large-crop study", needs_probe=True, groups=("robustness",),
             help="clean accuracy against the minimum crop scale each checkpoint was pre-trained with",
             writes="`robustness/large_crop.png`, `robustness/large_crop.json`, `robustness/robustness.csv`"),
)}
#: the commands that run several analyses -> their help
GROUPS: dict[str, str] = {
    "robustness": "clean, corrupted (ImageNet-C), adversarial (FGSM/PGD) and internal-corruption accuracy and the "
                  "large-crop study (robustness.sweeps selects)",
    "report": "every analysis on the checkpoints, as one self-contained HTML report",
}

#: name -> (section builder, check), filled by ``@section`` as ``cossl_analysis.report`` loads
_SECTIONS: dict[str, tuple[Builder, Check | None]] = {}


def section(name: str, check: Check | None = None) -> Callable[[Builder], Builder]:
    """Register the decorated function as the report section builder of the analysis ``name`` (an
    entry of :data:`ANALYSES`); ``check`` refuses a request before anything runs."""

    def register(build: Builder) -> Builder:
        if name not in ANALYSES:
            raise ValueError(f"no analysis {name!r} in cossl_analysis.registry.ANALYSES: declare it there first")
        if name in _SECTIONS:
            raise ValueError(f"analysis {name!r} is registered twice")
        _SECTIONS[name] = (build, check)
        return build

    return register


def _registered_section(name: str) -> tuple[Builder, Check | None]:
    """(builder, check) of ``name``; importing the report registers every builder."""
    importlib.import_module("cossl_analysis.report")
    if name not in _SECTIONS:
        raise ValueError(f"analysis {name!r} has no section builder: decorate one with @section({name!r}) in "
                         f"cossl_analysis/report/{name}.py and import it in cossl_analysis/report/__init__.py")
    return _SECTIONS[name]


def registered() -> list[Analysis]:
    """Every analysis, in report order."""
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
