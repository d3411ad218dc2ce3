"""Seeds of the device-side augmentations, all drawn from one seed sequence.

Every (run seed, epoch, micro-step, process, view) gets its own 63-bit seed from numpy's
``SeedSequence``: distinct tuples give independent streams (no seed of one view or process is
another's, and nothing wraps around however long the run), and a resumed run recomputes exactly
the seeds of the uninterrupted one.
"""

from __future__ import annotations

import numpy as np


def augment_seed(seed: int, epoch: int, step: int, rank: int, view: int) -> int:
    """The seed of view ``view`` (0, 1: global views; 2+: small crops) of micro-step ``step`` of
    ``epoch`` on process ``rank``."""
    state = np.random.SeedSequence([seed, epoch, step, rank, view]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
