"""Batched multi-task sampling: every (task, episode) pair steps in one env call per time step.

Environment index ``n = task * episodes_per_task + episode`` (task-major), so the flat
``[N, ...]`` arrays of the batched env reshape to ``[tasks, E, ...]`` without copies,
and the adapted policies of all tasks act in one batched forward per step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from metarl.episodes import Episodes
from metarl.seeding import derive_seed


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the block. The sampler's per-step forward is small, and with more
    threads OpenMP workers keep spinning after each op, taking CPU from MuJoCo's threads (about 10%
    of the sampling rate on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sample_episodes(
    env,
    policy,
    task_params: dict[str, Tensor],
    tasks: Sequence[dict],
    episodes_per_task: int,
    seed: int,
    deterministic: bool = False,
) -> Episodes:
    """Roll out ``episodes_per_task`` episodes of ``max_episode_steps`` steps for every task.

    Args:
        env: a batched env (``envs.make_batched``) with ``num_envs == len(tasks) * episodes_per_task``.
        policy: a policy with ``act(task_params, obs [tasks, E, obs_dim]) -> actions [tasks, E, ...]``.
        task_params: parameters with a leading task axis (one set per task), ``[tasks, ...]``.
        tasks: one task dict per task.
        seed: seeds both the env's reset noise and the policy's action noise, so a call is reproducible.

    Returns:
        Episodes with ``observations [tasks, T, E, obs_dim]``, ``actions``, ``rewards [tasks, T, E]`` and
        ``mask [tasks, T, E]`` (1.0 while the episode runs; 0.0 after it terminated).
    """
    num_tasks, num_eps = len(tasks), episodes_per_task
    n = num_tasks * num_eps
    if env.num_envs != n:
        raise ValueError(f"batched env has {env.num_envs} envs, need {num_tasks} tasks x {num_eps} episodes = {n}")
    horizon = env.max_episode_steps
    env.set_tasks([task for task in tasks for _ in range(num_eps)])
    generator = torch.Generator().manual_seed(int(seed))

    obs = env.reset(seed=int(seed))
    observations = np.empty((horizon, n, env.observation_dim), dtype=np.float32)
    rewards = np.zeros((horizon, n), dtype=np.float32)
    mask = np.zeros((horizon, n), dtype=np.float32)
    alive = np.ones(n, dtype=bool)
    actions: Tensor | None = None
    with torch.no_grad(), _one_torch_thread():
        for t in range(horizon):
            observations[t] = obs
            obs_t = torch.from_numpy(observations[t]).view(num_tasks, num_eps, -1)
            action_t = policy.act(task_params, obs_t, generator=generator, deterministic=deterministic)
            if actions is None:  # allocated on the first step: the policy decides dtype and shape
                actions = torch.empty((horizon, *action_t.shape), dtype=action_t.dtype)
            actions[t] = action_t
            obs, reward, terminated = env.step(action_t.reshape(n, *action_t.shape[2:]).numpy())
            mask[t] = alive
            rewards[t] = np.where(alive, reward, 0.0)
            alive &= ~np.asarray(terminated, dtype=bool)
            if not alive.any():  # every episode ended: the remaining steps stay masked
                observations[t + 1 :] = 0.0
                actions[t + 1 :] = 0
                break

    def task_major(x: np.ndarray | Tensor) -> Tensor:
        x = torch.as_tensor(x)
        x = x.reshape(horizon, num_tasks, num_eps, *x.shape[2:])
        return x.transpose(0, 1).contiguous()

    assert actions is not None
    return Episodes(
        observations=task_major(observations),
        actions=actions.transpose(0, 1).contiguous(),
        rewards=task_major(rewards),
        mask=task_major(mask),
    )


def sample_step_counted(env, policy, task_params: dict[str, Tensor], tasks: Sequence[dict], episodes: int,
                        batch_steps: int, seed: int) -> Episodes:
    """Whole episodes of every task until they hold at least ``batch_steps`` environment steps.

    This is rllab's collection rule (the MAML paper's test batches): an episode is collected when
    fewer than ``batch_steps`` steps were collected before it. Episodes are sampled ``episodes`` per
    task at a time (round 0 seeded with ``seed``, round r with ``derive_seed(seed, r)``) until every
    task has enough. Returns ``[tasks, T, E]``, E the most episodes any task collected, where each
    task's episodes after its collected ones have an all-zero mask, so masked means, the baseline fit
    and the inner step use only the collected ones; :meth:`Episodes.mean_return` averages over them.
    """
    if batch_steps < 1:
        raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
    # Every round samples every task (one env call per step keeps the draws reproducible), but keeps only the
    # tasks that collect from it: the slowest of many tasks needs far more rounds than the rest.
    kept: list[tuple[Tensor, Episodes]] = []  # per round: (indices of the tasks kept, their episodes)
    taken = torch.zeros(len(tasks))  # [tasks] steps sampled before this round
    collected_per_task = torch.zeros(len(tasks), dtype=torch.long)
    while True:
        round_seed = seed if not kept else derive_seed(seed, len(kept))
        batch = sample_episodes(env, policy, task_params, tasks, episodes, seed=round_seed)
        lengths = batch.mask.sum(1)  # [tasks, episodes] steps per episode
        collected = (taken[:, None] + lengths.cumsum(1) - lengths) < batch_steps  # started below the count
        keep = collected.any(1).nonzero().squeeze(1)
        mask = batch.mask * collected[:, None, :].to(batch.mask.dtype)
        kept.append((keep, batch.replace(mask=mask).select(tasks=keep)))
        collected_per_task += collected.sum(1)
        taken = taken + lengths.sum(1)
        if bool((taken >= batch_steps).all()):
            break
    width = int(collected_per_task.max())  # each task's collected episodes come first
    first = kept[0][1]  # round 0 keeps every task: every first episode starts at 0 steps
    out = {name: torch.zeros((len(tasks), first.horizon, width, *getattr(first, name).shape[3:]),
                             dtype=getattr(first, name).dtype)
           for name in ("observations", "actions", "rewards", "mask")}
    for r, (keep, part) in enumerate(kept):
        lo, hi = r * episodes, min((r + 1) * episodes, width)
        if lo < hi:
            for name, tensor in out.items():
                tensor[keep, :, lo:hi] = getattr(part, name)[:, :, : hi - lo]
    return Episodes(**out)
