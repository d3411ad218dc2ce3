"""The only part of the analysis layer that knows checkpoints, groups of seeds, the result store and
HTML: one section builder per analysis (each registers itself, in report order, on import here),
the session they share, and the runner (``run_analyses``, ``write_report``)."""

# Each builder registers its analysis on import, so this order is the report's (and isort's hands off).
# isort: off
from cossl_analysis.report import similarity  # noqa: F401
from cossl_analysis.report import erf  # noqa: F401
from cossl_analysis.report import patch_drop  # noqa: F401
from cossl_analysis.report import co_objective  # noqa: F401
from cossl_analysis.report import internal_corruption  # noqa: F401
from cossl_analysis.report import corruption  # noqa: F401
from cossl_analysis.report import adversarial  # noqa: F401
from cossl_analysis.report import large_crop  # noqa: F401
# isort: on
from cossl_analysis.report.files import (
    save_erf,
    save_figure,
    save_internal_corruption,
    save_patch_drop,
    save_similarity,
    write_json,
)
from cossl_analysis.report.loading import EvalSet, Model, load_checkpoint, load_eval_set, load_images, load_models
from cossl_analysis.report.run import run_analyses, write_report

__all__ = ["EvalSet", "Model", "load_checkpoint", "load_eval_set", "load_images", "load_models", "run_analyses",
           "save_erf", "save_figure", "save_internal_corruption", "save_patch_drop", "save_similarity", "write_json",
           "write_report"]
