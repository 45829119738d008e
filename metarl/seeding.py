"""Seeds derived from (stream, run seed, counters), so any iteration can be replayed without RNG state.

Training, evaluation and validation draw from different streams, so held-out evaluation tasks come
from seeds that training never uses.
"""

from __future__ import annotations

import numpy as np

TRAIN, EVALUATE, VALIDATE = 0, 1, 2


def derive_seed(stream: int, *keys: int) -> int:
    """A 31-bit seed that depends on every key (SeedSequence hashing; no collisions in practice)."""
    return int(np.random.SeedSequence([stream, *(int(k) for k in keys)]).generate_state(1)[0] >> 1)
