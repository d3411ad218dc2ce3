"""Analyses of trained encoders: any module mapping (B, 3, H, W) images in [0, 1] to (B, C, h, w)
feature maps (a cossl checkpoint's encoder, or any network through ``from_module`` / ``load_external``).
One function per analysis and its result type, the settings (``AnalysisConfig``), and the report
over models (``write_report``); docs/analysis.md has the rest.

Names load on first use (PEP 562), so that a corruption worker importing one submodule does not
pay for captum, matplotlib and the rest of the stack.
"""

# No ``from __future__ import annotations`` and private aliases only: every module-level name that is
# not API would show in ``dir(cossl_analysis)``, tab completion and ``help()``.
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # static checkers and IDEs see the real names; at run time they load on first use
    from cossl_analysis.analyses.accuracy import ProbeClassifier, classifier_accuracy, probe_accuracy
    from cossl_analysis.analyses.adversarial import AdversarialResult, adversarial_sweep, attack_accuracy
    from cossl_analysis.analyses.co_objective import (
        CoParts,
        ObjectiveResult,
        co_objective,
        head_space_features,
        head_space_pool_head,
    )
    from cossl_analysis.analyses.corruption import CorruptionResult, corrupt_batch, corruption_summary, corruption_sweep
    from cossl_analysis.analyses.erf import DEFAULT_POSITIONS, erf_map, erf_stats, position_indices, rf_centres
    from cossl_analysis.analyses.features import representations
    from cossl_analysis.analyses.internal_corruption import (
        InternalCorruptionResult,
        corrupt_features,
        corrupted,
        internal_corruption_sweep,
    )
    from cossl_analysis.analyses.patch_drop import (
        PatchDropResult,
        num_dropped,
        patch_drop_analysis,
        patch_drop_from_features,
        pool_kept,
        position_drop_order,
    )
    from cossl_analysis.analyses.similarity import (
        SimilarityResult,
        pearson,
        similarity_analysis,
        similarity_from_features,
    )
    from cossl_analysis.config import AnalysisConfig, load_analysis_config
    from cossl_analysis.errors import AnalysisError
    from cossl_analysis.external import ExternalEncoder, from_module, load_external, parse_spec
    from cossl_analysis.report import load_checkpoint, load_eval_set, load_images, load_models, write_report

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "ProbeClassifier": "analyses.accuracy",
    "classifier_accuracy": "analyses.accuracy",
    "probe_accuracy": "analyses.accuracy",
    "AdversarialResult": "analyses.adversarial",
    "adversarial_sweep": "analyses.adversarial",
    "attack_accuracy": "analyses.adversarial",
    "CoParts": "analyses.co_objective",
    "ObjectiveResult": "analyses.co_objective",
    "co_objective": "analyses.co_objective",
    "head_space_features": "analyses.co_objective",
    "head_space_pool_head": "analyses.co_objective",
    "CorruptionResult": "analyses.corruption",
    "corrupt_batch": "analyses.corruption",
    "corruption_summary": "analyses.corruption",
    "corruption_sweep": "analyses.corruption",
    "DEFAULT_POSITIONS": "analyses.erf",
    "erf_map": "analyses.erf",
    "erf_stats": "analyses.erf",
    "position_indices": "analyses.erf",
    "rf_centres": "analyses.erf",
    "representations": "analyses.features",
    "InternalCorruptionResult": "analyses.internal_corruption",
    "corrupt_features": "analyses.internal_corruption",
    "corrupted": "analyses.internal_corruption",
    "internal_corruption_sweep": "analyses.internal_corruption",
    "PatchDropResult": "analyses.patch_drop",
    "num_dropped": "analyses.patch_drop",
    "patch_drop_analysis": "analyses.patch_drop",
    "patch_drop_from_features": "analyses.patch_drop",
    "pool_kept": "analyses.patch_drop",
    "position_drop_order": "analyses.patch_drop",
    "SimilarityResult": "analyses.similarity",
    "pearson": "analyses.similarity",
    "similarity_analysis": "analyses.similarity",
    "similarity_from_features": "analyses.similarity",
    "AnalysisConfig": "config",
    "load_analysis_config": "config",
    "AnalysisError": "errors",
    "ExternalEncoder": "external",
    "from_module": "external",
    "load_external": "external",
    "parse_spec": "external",
    "load_checkpoint": "report",
    "load_eval_set": "report",
    "load_images": "report",
    "load_models": "report",
    "write_report": "report",
}
#: names of earlier versions -> what replaced them
_RENAMED: dict[str, str] = {
    "AnalysisOptions": "AnalysisConfig (nested sections: erf_images -> erf.images, eps_255 -> robustness.eps, ...)",
    "extract_features": "representations",
    "plot_erf": "cossl_analysis.viz.erf.plot_erf (a Figure) or cossl_analysis.report.save_erf (files)",
    "plot_similarity": "cossl_analysis.viz.similarity.plot_similarity_panels or cossl_analysis.report.save_similarity",
    "plot_patch_drop": "cossl_analysis.viz.patch_drop.plot_patch_drop or cossl_analysis.report.save_patch_drop",
    "plot_internal_corruption": "cossl_analysis.viz.internal_corruption.plot_internal_corruption or "
                                "cossl_analysis.report.save_internal_corruption",
}

#: the subpackages a user imports from (``cossl_analysis.viz.similarity``, ``cossl_analysis.report``, ...)
_SUBPACKAGES = ("analyses", "config", "external", "report", "viz")

# Spelled out (not derived from _EXPORTS) so that linters see the re-exports; a test checks the two agree.
__all__ = [
    "DEFAULT_POSITIONS",
    "AdversarialResult",
    "AnalysisConfig",
    "AnalysisError",
    "CoParts",
    "CorruptionResult",
    "ExternalEncoder",
    "InternalCorruptionResult",
    "ObjectiveResult",
    "PatchDropResult",
    "ProbeClassifier",
    "SimilarityResult",
    "adversarial_sweep",
    "attack_accuracy",
    "classifier_accuracy",
    "co_objective",
    "corrupt_batch",
    "corrupt_features",
    "corrupted",
    "corruption_summary",
    "corruption_sweep",
    "erf_map",
    "erf_stats",
    "from_module",
    "head_space_features",
    "head_space_pool_head",
    "internal_corruption_sweep",
    "load_analysis_config",
    "load_checkpoint",
    "load_eval_set",
    "load_external",
    "load_images",
    "load_models",
    "num_dropped",
    "parse_spec",
    "patch_drop_analysis",
    "patch_drop_from_features",
    "pearson",
    "pool_kept",
    "position_drop_order",
    "position_indices",
    "probe_accuracy",
    "representations",
    "rf_centres",
    "similarity_analysis",
    "similarity_from_features",
    "write_report",
]


def __getattr__(name: str) -> object:
    """Import the submodule defining ``name`` on first access and cache the value here."""
    module = _EXPORTS.get(name)
    if module is None:
        hint = f"; it was replaced by {_RENAMED[name]}" if name in _RENAMED else ""
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}{hint}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """The API alone (tab completion, ``help()``): ``__all__`` and the subpackages the docs name."""
    return sorted([*__all__, *_SUBPACKAGES])
