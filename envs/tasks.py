"""Task spaces: what a task dict may hold, how to validate it, how to sample it.

A task is a plain dict such as ``{"velocity": 1.3}``. Each env declares a
``TaskSpace`` (key -> ``Interval`` or ``Choice``); ``validate_task`` turns user
input into a clean dict or raises ``ValueError`` naming the key, the value and
the allowed range. Every env, single or batched, validates through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


def _is_number(value: Any) -> bool:
    """A real number (Python or numpy), not a bool or a string."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Interval:
    """A closed box ``[low, high]``; ``size`` > 1 means a tuple of that many floats."""

    low: float
    high: float
    size: int = 1

    def describe(self) -> str:
        box = f"[{self.low:g}, {self.high:g}]"
        return box if self.size == 1 else f"{box}^{self.size}"

    def check(self, key: str, value: Any) -> float | tuple[float, ...]:
        is_sequence = isinstance(value, (list, tuple, np.ndarray))
        items = list(value) if is_sequence else [value]
        if is_sequence == (self.size == 1) or len(items) != self.size:  # the wrong count, before the range
            count = "one number" if self.size == 1 else f"{self.size} numbers, each"
            raise ValueError(f"task key {key!r}: value {value!r} should be {count} in [{self.low:g}, {self.high:g}]")
        if not all(_is_number(v) for v in items):
            what = "is not a number" if self.size == 1 else "holds something other than a number"
            raise ValueError(f"task key {key!r}: value {value!r} {what}; it should be in {self.describe()}")
        if not all(self.low <= v <= self.high for v in items):  # NaN fails the comparisons
            raise ValueError(f"task key {key!r}: value {value!r} is outside the range {self.describe()}")
        return float(items[0]) if self.size == 1 else tuple(float(v) for v in items)

    def sample(self, rng: np.random.Generator, n: int) -> list[Any]:
        if self.size == 1:
            return [float(v) for v in rng.uniform(self.low, self.high, size=n)]
        return [tuple(float(x) for x in row) for row in rng.uniform(self.low, self.high, size=(n, self.size))]


@dataclass(frozen=True)
class Choice:
    """One of a few values, drawn with equal probability."""

    values: tuple[float, ...]

    def describe(self) -> str:
        return "{" + ", ".join(f"{v:+g}" for v in self.values) + "}"

    def check(self, key: str, value: Any) -> float:
        if not _is_number(value):
            raise ValueError(f"task key {key!r}: value {value!r} is not a number; it should be in {self.describe()}")
        if value not in self.values:
            raise ValueError(f"task key {key!r}: value {value!r} is outside the range {self.describe()}")
        return float(value)

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        return [float(self.values[i]) for i in rng.integers(len(self.values), size=n)]


TaskSpace = Mapping[str, Interval | Choice]


def validate_task(task: Any, space: TaskSpace) -> dict[str, Any]:
    """A clean copy of ``task`` (floats / tuples of floats); ``ValueError`` on unknown, missing or bad keys."""
    if not isinstance(task, Mapping):
        raise ValueError(f"a task must be a dict with keys {sorted(space)}, got {task!r}")
    for key in task:
        if key not in space:
            known = ", ".join(f"{k!r} in {kind.describe()}" for k, kind in space.items())
            raise ValueError(f"unknown task key {key!r} with value {task[key]!r} (known: {known})")
    clean = {}
    for key, kind in space.items():
        if key not in task:
            raise ValueError(f"task is missing key {key!r} (range {kind.describe()})")
        value = task[key]
        if isinstance(value, np.ndarray) and value.ndim == 0:  # a numpy scalar in array form is its number
            value = value.item()
        clean[key] = kind.check(key, value)
    return clean


def sample_tasks(space: TaskSpace, n: int, seed: int | None = None) -> list[dict[str, Any]]:
    """``n`` tasks drawn independently from ``space``; the same ``seed`` gives the same tasks."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"number of tasks must be a non-negative integer, got {n!r}")
    rng = np.random.default_rng(seed)
    columns = {key: kind.sample(rng, int(n)) for key, kind in space.items()}
    return [{key: columns[key][i] for key in space} for i in range(int(n))]


def validate_tasks(tasks: Any, space: TaskSpace, num_envs: int) -> list[dict[str, Any]]:
    """Validate one task per env of a batched env (``len(tasks) == num_envs``)."""
    tasks = list(tasks)
    if len(tasks) != num_envs:
        raise ValueError(f"set_tasks expects {num_envs} tasks (one per env), got {len(tasks)}")
    return [validate_task(t, space) for t in tasks]
