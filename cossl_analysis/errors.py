"""The one error type of the analysis layer for bad input (checkpoints, data, settings)."""

from __future__ import annotations

from cossl_train.errors import CosslError


class AnalysisError(CosslError, ValueError):
    """A request that cannot be carried out as asked; the message is one line."""
