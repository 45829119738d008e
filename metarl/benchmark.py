"""``metarl bench``: where the time of a meta-iteration goes, measured on one batch in one run.

- ``physics_steps_per_s``: batched MuJoCo stepping of all (task, episode) envs, no policy (the limit);
- ``sampler_steps_per_s``: ``sample_episodes`` with the policy in the loop;
- ``gym_sync_steps_per_s``: the same rollouts (same policy, tasks, episode count) through gymnasium's
  ``SyncVectorEnv`` over the single envs;
- ``sampling_s`` / ``update_s``: a full meta-iteration of the config, split (the median over
  ``repeats`` consecutive iterations after a first, warm-up one: iterations differ in their data and
  in how many line-search steps they take, so the median is the typical one);
- ``peak_rss_mb``: the peak resident memory of the process and its physics workers (the rllab ant's)
  up to the end of the meta-iterations, read before the gymnasium comparison, whose single envs are
  no part of training.

Rates are env-steps per second over whole episodes, best of ``repeats`` (other load on the
machine only ever slows a run down, so the best is the least disturbed). Physics and sampler
episodes take turns on the same batched env, repeat ``r`` of each from the states of ``reset(seed=r)``,
so a drift in the machine's speed hits both alike; the gymnasium episodes (timed after the
meta-iterations) reset their single envs with seed ``r`` too, which draws other states from the same
distribution.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.benchmark import measure as measure_env_rates
from metarl.errors import UserError
from metarl.sampling import sample_episodes
from metarl.training import TrainConfig, broadcast, make_env, make_learner, make_policy, meta_iteration, peak_rss_mb

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def config_path(name: str) -> Path:
    """``halfcheetah_vel`` -> ``experiments/halfcheetah_vel.toml``; a path to a TOML file is taken as it is."""
    path = Path(name)
    if path.suffix == ".toml":
        return path
    path = EXPERIMENTS / f"{name}.toml"
    if not path.is_file():
        # the meta-RL configs (each names its env), not the supervised ones
        known = sorted(p.stem for p in EXPERIMENTS.glob("*.toml") if "env" in tomllib.loads(p.read_text()))
        raise UserError(f"unknown experiment {name!r} (known: {', '.join(known)}) or give a .toml path")
    return path


def _gym_sync_seconds(config: TrainConfig, policy, params, tasks, repeats: int) -> float:
    """Best of ``repeats`` times for one episode of every (task, episode) pair through gymnasium's
    SyncVectorEnv (built once, outside the timing)."""
    num_eps = config.episodes_per_task
    oracle = config.method == "oracle"  # the policy then also observes the task, as in training
    vector = gym.vector.SyncVectorEnv([lambda: envs.make(config.env, oracle=oracle) for _ in range(len(tasks) * num_eps)])
    for i, env in enumerate(vector.envs):
        env.unwrapped.set_task(tasks[i // num_eps])
    task_params = broadcast(params, len(tasks))
    seconds = []
    for r in range(repeats):
        generator = torch.Generator().manual_seed(r)
        start = time.perf_counter()
        obs, _ = vector.reset(seed=r)
        with torch.no_grad():
            for _ in range(vector.envs[0].spec.max_episode_steps):
                obs_t = torch.as_tensor(obs, dtype=torch.float32).view(len(tasks), num_eps, -1)
                actions = policy.act(task_params, obs_t, generator=generator)
                obs, *_ = vector.step(actions.reshape(len(tasks) * num_eps, -1).numpy())
        seconds.append(time.perf_counter() - start)
    vector.close()
    return min(seconds)


def run_benchmark(config: TrainConfig, repeats: int = 3) -> dict[str, float]:
    """All figures of ``metarl bench`` for ``config`` (its meta-batch, episodes and policy)."""
    torch.set_num_threads(config.num_threads)
    num_tasks, num_eps = config.meta_batch_size, config.episodes_per_task
    n = num_tasks * num_eps
    env = make_env(config, num_tasks, num_eps)
    policy = make_policy(config, env)
    learner = make_learner(config, policy)
    params = policy.init_params(torch.Generator().manual_seed(config.seed))
    tasks = envs.sample_tasks(config.env, num_tasks, seed=config.seed)
    steps = n * env.max_episode_steps

    if hasattr(env, "step_physics"):
        # raw physics and the sampler take turns on the same batched env, so that a change in the machine's
        # speed during the run (other tenants, clock boost) hits both alike
        rng = np.random.default_rng(config.seed)
        controls = np.clip(rng.normal(0.0, 1.0, size=(env.max_episode_steps, n, env.action_dim)),
                           env.action_low, env.action_high)

        def physics_episode(seed: int) -> None:
            env.reset(seed=seed)
            for t in range(env.max_episode_steps):
                env.step_physics(controls[t])
    else:  # navigation: numpy only, the env's own step is its physics
        env_rates = measure_env_rates(config.env, n, num_threads=config.num_threads, repeats=repeats)
        physics_episode = None

    physics_s, sampler_s = [], []
    for r in range(repeats):
        if physics_episode is not None:
            start = time.perf_counter()
            physics_episode(r)
            physics_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        sample_episodes(env, policy, broadcast(params, num_tasks), tasks, num_eps, seed=r)
        sampler_s.append(time.perf_counter() - start)
    physics = steps / min(physics_s) if physics_s else env_rates["batched_step"]

    # the first iteration pays one-off costs (allocations, lazy initialisation): it is not counted
    rows = []
    initial = params
    for it in range(1 + repeats):
        params, row = meta_iteration(config, env, policy, learner, params, it)
        rows.append(row)
    timed = rows[1:]
    peak = peak_rss_mb()  # while the physics workers run, and before the gymnasium envs exist
    env.close()
    gym_s = _gym_sync_seconds(config, policy, initial, tasks, repeats)  # the sampler's policy: the initial one
    return {
        "env": config.env,
        "num_envs": n,
        "physics_steps_per_s": physics,
        "sampler_steps_per_s": steps / min(sampler_s),
        "gym_sync_steps_per_s": steps / gym_s,
        "sampling_s": float(np.median([r["sampling_s"] for r in timed])),
        "update_s": float(np.median([r["update_s"] for r in timed])),
        "peak_rss_mb": peak,
    }


def format_report(result: dict[str, float]) -> str:
    lines = [f"{result['env']}: {result['num_envs']} envs (tasks x episodes)"]
    for key in ("physics_steps_per_s", "sampler_steps_per_s", "gym_sync_steps_per_s"):
        lines.append(f"  {key:<22} {result[key]:>12,.0f}")
    lines.append(f"  sampler / physics      {result['sampler_steps_per_s'] / result['physics_steps_per_s']:>12.2f}")
    lines.append(f"  sampler / gym sync     {result['sampler_steps_per_s'] / result['gym_sync_steps_per_s']:>12.2f}")
    lines.append(f"  one meta-iteration:    sampling {result['sampling_s']:.2f} s, update {result['update_s']:.2f} s")
    lines.append(f"  peak RSS               {result['peak_rss_mb']:>9.0f} MiB")
    return "\n".join(lines)
