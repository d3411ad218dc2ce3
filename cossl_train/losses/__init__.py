"""Losses of the base methods and of the CO term, as small parts on tensors (shapes and an example
in each docstring): functions (``byol_loss``, the InfoNCE forms, DINO's cross-entropy), one pair
loss per base method (:class:`SimCLRLoss`, :class:`BYOLLoss`, :class:`MoCoV3Loss`,
:class:`DINOLoss`) and :class:`CoLoss`, which adds the CO term to any of them. The contrastive ones
take keys gathered from all processes and this process's ``offset`` among them."""

from .byol import BYOLLoss, byol_loss
from .co import DIRECTIONS, CoLoss, CoLossOutput, target_cosine
from .dino import DINOLoss, dino_cross_entropy, teacher_probabilities
from .infonce import global_to_local_infonce, infonce_loss, local_to_global_infonce, nt_xent_loss
from .mocov3 import MoCoV3Loss
from .pair import PairLoss, view_pairs
from .simclr import SimCLRLoss

__all__ = [
    "BYOLLoss",
    "CoLoss",
    "CoLossOutput",
    "DINOLoss",
    "DIRECTIONS",
    "MoCoV3Loss",
    "PairLoss",
    "SimCLRLoss",
    "byol_loss",
    "dino_cross_entropy",
    "global_to_local_infonce",
    "infonce_loss",
    "local_to_global_infonce",
    "nt_xent_loss",
    "target_cosine",
    "teacher_probabilities",
    "view_pairs",
]
