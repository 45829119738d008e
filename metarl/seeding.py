"""Seeds derived from (stream, run seed, counters), so any iteration can be replayed without RNG state.

Training, evaluation and validation draw from different streams, so held-out evaluation tasks come
from seeds that training never uses.
"""

from __future__ import annotations

import numpy as np

from metarl.errors import UserError

TRAIN, EVALUATE, VALIDATE = 0, 1, 2
MAX_SEED = 2**64 - 1  # the largest seed torch.Generator.manual_seed takes (a run seed initializes the network)


def check_seed_key(name: str, value: int) -> None:
    """The one-line error for a config seed outside ``[0, MAX_SEED]``."""
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"config key {name!r} must be in [0, 2**64 - 1], got {value}")


def derive_seed(stream: int, *keys: int) -> int:
    """A 31-bit seed that depends on every key (SeedSequence hashing; no collisions in practice).
    Keys are integers >= 0 (SeedSequence's entropy); a negative one is a ValueError that names it."""
    values = [int(stream), *(int(k) for k in keys)]
    if min(values) < 0:
        raise ValueError(f"seeds and seed keys must be >= 0, got {min(values)} in {values}")
    return int(np.random.SeedSequence(values).generate_state(1)[0] >> 1)
