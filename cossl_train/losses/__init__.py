"""Losses of the base methods and of the CO term, as small functions (shapes in each docstring); the
contrastive ones take keys gathered from all processes and this process's ``offset`` among them."""

from .byol import byol_loss
from .dino import dino_cross_entropy, teacher_probabilities
from .infonce import global_to_local_infonce, infonce_loss, local_to_global_infonce, nt_xent_loss

__all__ = [
    "byol_loss",
    "dino_cross_entropy",
    "global_to_local_infonce",
    "infonce_loss",
    "local_to_global_infonce",
    "nt_xent_loss",
    "teacher_probabilities",
]
