"""Losses of the base methods and of the CO term, as small functions (shapes in each docstring).

* ``byol``: the negative-cosine loss of BYOL (also CO-BYOL's local terms).
* ``infonce``: SimCLR's NT-Xent, MoCo-v3's InfoNCE, and the local/global InfoNCE of the CO term.
* ``dino``: DINO's teacher sharpening/centring and its cross-entropy.

Every contrastive loss takes *keys* that may have been gathered from all processes and the
``offset`` of this process's rows among them, so the same code serves one process and DDP.
"""

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
