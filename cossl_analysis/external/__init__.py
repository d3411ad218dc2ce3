"""Any model into the analysis layer: torchvision, timm, published SSL checkpoints, Python callables.

* :func:`parse_spec` -> :class:`ModelSpec`: ``PATH`` (a cossl checkpoint), ``torchvision:NAME[@WEIGHTS]``,
  ``timm:NAME[@WEIGHTS]``, ``MODULE:FUNCTION[@WEIGHTS]`` (the training core's parser,
  ``cossl_train.backbones.spec``, shared with ``backbone.name``).
* :func:`load_external`: a non-cossl spec as an :class:`ExternalEncoder` (weights from a local file,
  in any of the layouts published SSL code writes; nothing is downloaded). The map and the global
  of each model family are the training core's rules (``cossl_train.backbones.external``).
* :func:`from_module`: a network already in memory as an :class:`ExternalEncoder`.
* :func:`require_map_size` / :func:`min_resolution` / :func:`require_poolable_subsets`: the refusals
  of the analyses that compare positions.

See docs/analysis.md, "Your own model".
"""

from __future__ import annotations

from cossl_analysis.external.build import build_model, load_external, parse_spec
from cossl_analysis.external.checks import map_side, min_resolution, require_map_size, require_poolable_subsets
from cossl_analysis.external.encoder import IMAGENET_MEAN, IMAGENET_STD, ExternalEncoder, GlobalPool, from_module
from cossl_analysis.external.weights import (
    CONTAINERS,
    HEAD_NAMES,
    KNOWN_PREFIXES,
    WeightsFit,
    find_state_dicts,
    fit_state_dict,
    load_weights,
    read_weights,
)
from cossl_train.backbones.spec import LIBRARIES, ModelSpec, SpecKind

__all__ = [
    "CONTAINERS",
    "HEAD_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KNOWN_PREFIXES",
    "LIBRARIES",
    "ExternalEncoder",
    "GlobalPool",
    "ModelSpec",
    "SpecKind",
    "WeightsFit",
    "build_model",
    "find_state_dicts",
    "fit_state_dict",
    "from_module",
    "load_external",
    "load_weights",
    "map_side",
    "min_resolution",
    "parse_spec",
    "read_weights",
    "require_map_size",
    "require_poolable_subsets",
]
