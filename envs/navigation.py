"""2D point navigation (Finn et al. 2017, section 5.3): reach a goal in the plane.

The point starts at the origin; an action is clipped to ``[-0.1, 0.1]^2`` and
added to the position; the reward is minus the Euclidean distance from the new
position to the goal; the episode terminates when both ``|dx|`` and ``|dy|``
are below 0.01 and is truncated after 100 steps. Task: ``{"goal": (x, y)}``
with goals drawn uniformly from ``[-0.5, 0.5]^2``.

``navigation_step`` is the one definition of the dynamics and reward; the
gymnasium env and the batched numpy env both call it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.tasks import Interval, TaskSpace, sample_tasks, validate_task, validate_tasks

TASK_SPACE: TaskSpace = {"goal": Interval(-0.5, 0.5, size=2)}
MAX_STEP = 0.1  # per-coordinate action bound
GOAL_TOLERANCE = 0.01  # per-coordinate distance that counts as reached
MAX_EPISODE_STEPS = 100


def navigation_step(
    position: np.ndarray, actions: np.ndarray, goals: np.ndarray, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move ``N`` points one step.

    position, actions, goals: ``[N, 2]``; ``out`` (optional, ``[N, 2]``) receives the new
    position in place (may be ``position`` itself). Returns (new position ``[N, 2]``,
    reward ``[N]`` float64, terminated ``[N]`` bool).
    """
    delta = np.clip(actions, -MAX_STEP, MAX_STEP)
    new_position = np.add(position, delta, out=out)
    offset = new_position - goals
    rewards = -np.sqrt(np.einsum("ij,ij->i", offset, offset))
    terminated = np.all(np.abs(offset) < GOAL_TOLERANCE, axis=1)
    return new_position, rewards, terminated


def _render_points(position: np.ndarray, goal: np.ndarray, size: int = 256) -> np.ndarray:
    """An ``[size, size, 3]`` uint8 picture of ``[-0.6, 0.6]^2``: goal red, point blue."""
    image = np.full((size, size, 3), 255, dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size]
    scale = size / 1.2

    def disc(center: np.ndarray, colour: tuple[int, int, int]) -> None:
        cx = (center[0] + 0.6) * scale
        cy = (0.6 - center[1]) * scale  # image rows grow downwards
        image[(xs - cx) ** 2 + (ys - cy) ** 2 <= (size / 40) ** 2] = colour

    disc(goal, (220, 40, 40))
    disc(position, (40, 40, 220))
    return image


class Navigation2DEnv(gym.Env):
    """A point in the plane walking to a goal. Observation: its position ``[2]`` float64."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, task: dict[str, Any] | None = None, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported (choose from {self.metadata['render_modes']})")
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float64)
        self._position = np.zeros((1, 2))
        self._task = {"goal": (0.0, 0.0)}
        self._goal = np.zeros((1, 2))
        self.set_task(task if task is not None else self._task)

    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        return sample_tasks(TASK_SPACE, n, seed)

    def set_task(self, task: dict[str, Any]) -> None:
        self._task = validate_task(task, TASK_SPACE)
        self._goal = np.asarray(self._task["goal"], dtype=np.float64).reshape(1, 2)

    def get_task(self) -> dict[str, Any]:
        return dict(self._task)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._position = np.zeros((1, 2))
        return self._position[0].copy(), {"task": self.get_task()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64).reshape(1, 2)
        self._position, reward, terminated = navigation_step(self._position, action, self._goal)
        return self._position[0].copy(), float(reward[0]), bool(terminated[0]), False, {"task": self.get_task()}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return _render_points(self._position[0], self._goal[0])


class BatchedNavigation2D:
    """``num_envs`` navigation episodes stepped together with numpy (see ``envs.make_batched``).

    Positions live in one preallocated ``[num_envs, 2]`` array; an env that
    terminated keeps moving (the sampler masks it), which stays finite because
    each step is bounded.
    """

    observation_dim = 2
    action_dim = 2
    max_episode_steps = MAX_EPISODE_STEPS

    def __init__(self, num_envs: int):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.action_low = np.full(2, -MAX_STEP)
        self.action_high = np.full(2, MAX_STEP)
        self._position = np.zeros((self.num_envs, 2))
        self._goals = np.zeros((self.num_envs, 2))
        self._tasks = [{"goal": (0.0, 0.0)} for _ in range(self.num_envs)]

    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        return sample_tasks(TASK_SPACE, n, seed)

    def set_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._tasks = validate_tasks(tasks, TASK_SPACE, self.num_envs)
        self._goals[:] = [t["goal"] for t in self._tasks]

    def get_tasks(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self._tasks]

    def reset(self, seed: int | None = None) -> np.ndarray:
        """All points back to the origin (there is no reset noise; ``seed`` is accepted for the API)."""
        self._position[:] = 0.0
        return self._position.copy()

    def get_state(self) -> np.ndarray:
        """Positions ``[num_envs, 2]`` (a copy)."""
        return self._position.copy()

    def set_state(self, position: np.ndarray) -> np.ndarray:
        """Place every point (``[num_envs, 2]``); returns the observations."""
        self._position[:] = position
        return self._position.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """actions ``[num_envs, 2]`` -> (obs ``[num_envs, 2]``, rewards ``[num_envs]``, terminated ``[num_envs]``)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions must have shape ({self.num_envs}, 2), got {actions.shape}")
        _, rewards, terminated = navigation_step(self._position, actions, self._goals, out=self._position)
        return self._position.copy(), rewards, terminated

    def close(self) -> None:
        """Nothing to release (numpy only); here so every batched env can be closed the same way."""
