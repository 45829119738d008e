"""Env-steps per second of a batched env: the raw physics and the full ``step``.

    python -m envs.benchmark --env metarl/HalfCheetahVel-v0 --num-envs 800 --threads 2

"raw physics" holds random controls through ``step_physics`` (MuJoCo only, no
clipping, observations or rewards); "batched step" is what the sampler calls.
Both run whole episodes (``max_episode_steps`` steps after a reset), taking
turns, and report the best of ``--repeats`` episodes each, so that other load on
the machine matters less and hits both alike.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import envs


def _episode_seconds(run_episode) -> float:
    start = time.perf_counter()
    run_episode()
    return time.perf_counter() - start


def measure(env_id: str, num_envs: int, num_threads: int, repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """``{"raw_physics": env-steps/s, "batched_step": env-steps/s}`` over full episodes of ``num_envs`` envs."""
    kwargs = {} if env_id == "metarl/Navigation2D-v0" else {"num_threads": num_threads}
    batched = envs.make_batched(env_id, num_envs, **kwargs)
    batched.set_tasks(batched.sample_tasks(num_envs, seed=seed))
    steps = batched.max_episode_steps
    rng = np.random.default_rng(seed)
    actions = rng.normal(0.0, 1.0, size=(steps, num_envs, batched.action_dim))
    controls = np.clip(actions, batched.action_low, batched.action_high)

    def raw() -> None:
        batched.reset(seed=seed)
        for t in range(steps):
            batched.step_physics(controls[t])

    def full() -> None:
        batched.reset(seed=seed)
        for t in range(steps):
            batched.step(actions[t])

    runs = {"raw_physics": raw, "batched_step": full}
    if not hasattr(batched, "step_physics"):  # navigation: numpy only, nothing to separate
        del runs["raw_physics"]
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], _episode_seconds(run))
    batched.close()
    return {name: steps * num_envs / seconds for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="metarl/HalfCheetahVel-v0", choices=envs.ENV_IDS)
    parser.add_argument("--num-envs", type=int, default=800)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.num_envs < 1 or args.threads < 0 or args.repeats < 1:
        parser.error("--num-envs and --repeats must be positive, --threads non-negative")
    rates = measure(args.env, args.num_envs, args.threads, args.repeats)
    for name, rate in rates.items():
        print(f"{args.env} num_envs={args.num_envs} threads={args.threads} {name}: {rate:,.0f} env-steps/s")
    if "raw_physics" in rates:
        print(f"batched_step / raw_physics = {rates['batched_step'] / rates['raw_physics']:.3f}")


if __name__ == "__main__":
    main()
