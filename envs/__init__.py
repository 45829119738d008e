"""Task-distribution environments for meta-RL, registered with gymnasium on import.

``gymnasium.make("metarl/HalfCheetahVel-v0")`` gives the single env (a
gymnasium ``Env`` with ``sample_tasks`` / ``set_task`` / ``get_task`` on
``env.unwrapped``); ``envs.make_batched(env_id, num_envs)`` gives the batched
form the sampler steps with one call per time step.
"""

from __future__ import annotations

import os

# MuJoCo picks its OpenGL backend when it is first imported; EGL renders headless.
os.environ.setdefault("MUJOCO_GL", "egl")

import functools  # noqa: E402

import gymnasium as gym  # noqa: E402

from envs.locomotion import (  # noqa: E402
    MAX_EPISODE_STEPS as _LOCOMOTION_STEPS,
    AntDirEnv,
    AntVelEnv,
    BatchedLocomotion,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
    LocomotionEnv,
)
from envs.navigation import MAX_EPISODE_STEPS as _NAVIGATION_STEPS  # noqa: E402
from envs.navigation import BatchedNavigation2D, Navigation2DEnv  # noqa: E402

_LOCOMOTION = {
    "metarl/HalfCheetahVel-v0": HalfCheetahVelEnv,
    "metarl/HalfCheetahDir-v0": HalfCheetahDirEnv,
    "metarl/AntVel-v0": AntVelEnv,
    "metarl/AntDir-v0": AntDirEnv,
}
_BATCHED = {"metarl/Navigation2D-v0": BatchedNavigation2D}
_BATCHED.update({env_id: functools.partial(BatchedLocomotion, cls) for env_id, cls in _LOCOMOTION.items()})

_REGISTRY = {"metarl/Navigation2D-v0": (Navigation2DEnv, _NAVIGATION_STEPS)}
_REGISTRY.update({env_id: (cls, _LOCOMOTION_STEPS) for env_id, cls in _LOCOMOTION.items()})
for _env_id, (_cls, _steps) in _REGISTRY.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=f"{_cls.__module__}:{_cls.__name__}", max_episode_steps=_steps)

ENV_IDS: tuple[str, ...] = tuple(_REGISTRY)


def make_batched(env_id: str, num_envs: int, **kwargs):
    """The batched form of ``env_id`` with ``num_envs`` (task, episode) slots.

    MuJoCo envs take ``num_threads`` (default 2) for the stepping thread pool.
    """
    if env_id not in _BATCHED:
        raise ValueError(f"unknown env {env_id!r} (known: {', '.join(ENV_IDS)})")
    return _BATCHED[env_id](num_envs, **kwargs)


__all__ = [
    "ENV_IDS",
    "make_batched",
    "Navigation2DEnv",
    "BatchedNavigation2D",
    "LocomotionEnv",
    "HalfCheetahVelEnv",
    "HalfCheetahDirEnv",
    "AntVelEnv",
    "AntDirEnv",
    "BatchedLocomotion",
]
