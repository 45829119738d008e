"""Task-distribution environments for meta-RL, registered with gymnasium on import.

``gymnasium.make("metarl/HalfCheetahVel-v0")`` gives the single env (a
gymnasium ``Env`` with ``sample_tasks`` / ``set_task`` / ``get_task`` on
``env.unwrapped``); ``envs.make_batched(env_id, num_envs)`` gives the batched
form the sampler steps with one call per time step.
"""

from __future__ import annotations

import gymnasium as gym

from envs.navigation import MAX_EPISODE_STEPS as _NAV_STEPS
from envs.navigation import BatchedNavigation2D, Navigation2DEnv

_BATCHED = {
    "metarl/Navigation2D-v0": BatchedNavigation2D,
}
_SINGLE = {
    "metarl/Navigation2D-v0": ("envs.navigation:Navigation2DEnv", _NAV_STEPS),
}

for _env_id, (_entry_point, _steps) in _SINGLE.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_entry_point, max_episode_steps=_steps)

ENV_IDS: tuple[str, ...] = tuple(_SINGLE)


def make_batched(env_id: str, num_envs: int):
    """The batched form of ``env_id`` with ``num_envs`` (task, episode) slots."""
    if env_id not in _BATCHED:
        raise ValueError(f"unknown env {env_id!r} (known: {', '.join(ENV_IDS)})")
    return _BATCHED[env_id](num_envs)


__all__ = ["ENV_IDS", "make_batched", "Navigation2DEnv", "BatchedNavigation2D"]
