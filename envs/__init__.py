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
    AntDirRllabEnv,
    AntVelEnv,
    AntVelRllabEnv,
    BatchedLocomotion,
    HalfCheetahDirEnv,
    HalfCheetahDirRllabEnv,
    HalfCheetahVelEnv,
    HalfCheetahVelRllabEnv,
    LocomotionEnv,
)
from envs.navigation import MAX_EPISODE_STEPS as _NAVIGATION_STEPS  # noqa: E402
from envs.navigation import TASK_SPACE as _NAVIGATION_TASKS  # noqa: E402
from envs.navigation import BatchedNavigation2D, Navigation2DEnv  # noqa: E402
from envs import tasks as _tasks  # noqa: E402
from envs.oracle import BatchedTaskObservation, TaskObservation  # noqa: E402

_LOCOMOTION = {
    "metarl/HalfCheetahVel-v0": HalfCheetahVelEnv,
    "metarl/HalfCheetahDir-v0": HalfCheetahDirEnv,
    "metarl/HalfCheetahVelRllab-v0": HalfCheetahVelRllabEnv,
    "metarl/HalfCheetahDirRllab-v0": HalfCheetahDirRllabEnv,
    "metarl/AntVel-v0": AntVelEnv,
    "metarl/AntDir-v0": AntDirEnv,
    "metarl/AntVelRllab-v0": AntVelRllabEnv,
    "metarl/AntDirRllab-v0": AntDirRllabEnv,
}
_BATCHED = {"metarl/Navigation2D-v0": BatchedNavigation2D}
_BATCHED.update({env_id: functools.partial(BatchedLocomotion, cls) for env_id, cls in _LOCOMOTION.items()})

_REGISTRY = {"metarl/Navigation2D-v0": (Navigation2DEnv, _NAVIGATION_STEPS)}
_REGISTRY.update({env_id: (cls, _LOCOMOTION_STEPS) for env_id, cls in _LOCOMOTION.items()})
for _env_id, (_cls, _steps) in _REGISTRY.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=f"{_cls.__module__}:{_cls.__name__}", max_episode_steps=_steps)

_TASK_SPACES = {"metarl/Navigation2D-v0": _NAVIGATION_TASKS}
_TASK_SPACES.update({env_id: cls.task_space for env_id, cls in _LOCOMOTION.items()})

ENV_IDS: tuple[str, ...] = tuple(_REGISTRY)


def _check_env_id(env_id: str) -> None:
    if env_id not in _REGISTRY:
        raise ValueError(f"unknown env {env_id!r} (known: {', '.join(ENV_IDS)})")


def task_dim(env_id: str) -> int:
    """Length of the task vector that oracle observations append (2 for a goal, 1 for a velocity or direction)."""
    _check_env_id(env_id)
    return sum(getattr(kind, "size", 1) for kind in _TASK_SPACES[env_id].values())


def make_batched(env_id: str, num_envs: int, oracle: bool = False, **kwargs):
    """The batched form of ``env_id`` with ``num_envs`` (task, episode) slots.

    MuJoCo envs take ``num_threads`` (default 2) for the stepping thread pool. With
    ``oracle=True`` every observation ends with the task's parameters (``envs.oracle``).
    """
    _check_env_id(env_id)
    env = _BATCHED[env_id](num_envs, **kwargs)
    if oracle:
        env = BatchedTaskObservation(env, task_keys(env_id), task_dim(env_id))
    return env


def make(env_id: str, oracle: bool = False, **kwargs) -> gym.Env:
    """The single env (``gymnasium.make``), with oracle observations if asked."""
    _check_env_id(env_id)
    env = gym.make(env_id, **kwargs)
    if oracle:
        env = TaskObservation(env, task_keys(env_id), task_dim(env_id))
    return env


def sample_tasks(env_id: str, n: int, seed: int | None = None) -> list[dict]:
    """``n`` tasks of ``env_id``, the same as ``env.unwrapped.sample_tasks`` gives, without building an env."""
    _check_env_id(env_id)
    return _tasks.sample_tasks(_TASK_SPACES[env_id], n, seed)


def task_keys(env_id: str) -> list[str]:
    """The keys of ``env_id``'s tasks, in order (e.g. ``["goal"]``, ``["velocity"]``)."""
    _check_env_id(env_id)
    return list(_TASK_SPACES[env_id])


def validate_task(env_id: str, task: dict) -> dict:
    """A clean copy of ``task`` for ``env_id``; ``ValueError`` naming the key, value and range otherwise."""
    _check_env_id(env_id)
    return _tasks.validate_task(task, _TASK_SPACES[env_id])


__all__ = [
    "ENV_IDS",
    "make",
    "make_batched",
    "task_dim",
    "sample_tasks",
    "task_keys",
    "validate_task",
    "Navigation2DEnv",
    "BatchedNavigation2D",
    "LocomotionEnv",
    "HalfCheetahVelEnv",
    "HalfCheetahDirEnv",
    "HalfCheetahVelRllabEnv",
    "HalfCheetahDirRllabEnv",
    "AntVelEnv",
    "AntDirEnv",
    "AntVelRllabEnv",
    "AntDirRllabEnv",
    "BatchedLocomotion",
]
