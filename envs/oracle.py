"""Oracle observations: the task's parameters appended to every observation.

The MAML paper's oracle baseline is a policy that sees which task it is in (the goal
position, the goal velocity or the direction), so it needs no adaptation. The task vector
is the task dict's values in its task space's key order, flattened
(``{"goal": (x, y)}`` -> ``[x, y]``, ``{"velocity": v}`` -> ``[v]``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np


def task_vector(task: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    """A validated task's values in ``keys`` order as one float64 vector."""
    return np.concatenate([np.atleast_1d(np.asarray(task[k], dtype=np.float64)) for k in keys])


class BatchedTaskObservation:
    """A batched env whose observations are ``[N, obs_dim + task_dim]``: the env's, then the task vector."""

    def __init__(self, env, keys: Sequence[str], task_dim: int):
        self.env = env
        self.keys = tuple(keys)
        self.task_dim = int(task_dim)
        self.observation_dim = env.observation_dim + self.task_dim
        # the wrapped env's current (default) tasks until set_tasks: observation and reward agree from the start
        self._task_vectors = np.array([task_vector(t, self.keys) for t in env.get_tasks()], dtype=np.float64)

    def __getattr__(self, name: str) -> Any:  # everything else is the wrapped env's
        return getattr(self.env, name)

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        self.env.set_tasks(tasks)
        self._task_vectors[:] = [task_vector(t, self.keys) for t in self.env.get_tasks()]

    def reset(self, seed: int | None = None) -> np.ndarray:
        return np.concatenate([self.env.reset(seed=seed), self._task_vectors], axis=1)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, terminated = self.env.step(actions)
        return np.concatenate([obs, self._task_vectors], axis=1), rewards, terminated


class TaskObservation(gym.ObservationWrapper):
    """The single-env form: ``env.unwrapped``'s current task vector appended to each observation."""

    def __init__(self, env: gym.Env, keys: Sequence[str], task_dim: int):
        super().__init__(env)
        self.keys = tuple(keys)
        low = np.concatenate([env.observation_space.low, np.full(task_dim, -np.inf)])
        high = np.concatenate([env.observation_space.high, np.full(task_dim, np.inf)])
        self.observation_space = gym.spaces.Box(low, high, dtype=env.observation_space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        vector = task_vector(self.env.unwrapped.get_task(), self.keys)
        return np.concatenate([observation, vector]).astype(self.observation_space.dtype)
