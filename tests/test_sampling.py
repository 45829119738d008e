"""The batched sampler against plain single-env rollouts, and its masks and seeding."""

import gymnasium as gym
import numpy as np
import torch

import envs  # noqa: F401  (registers the envs)
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import sample_episodes
from metarl.training import broadcast

ENV_ID = "metarl/Navigation2D-v0"


def _per_task_params(policy, num_tasks):
    """Different parameters for every task, stacked along a leading task axis."""
    sets = [policy.init_params(torch.Generator().manual_seed(10 + i)) for i in range(num_tasks)]
    return {k: torch.stack([s[k] for s in sets]) for k in sets[0]}


def test_deterministic_rollouts_match_single_env_with_each_tasks_params():
    tasks = [{"goal": (0.3, -0.2)}, {"goal": (-0.45, 0.1)}, {"goal": (0.0, 0.4)}]
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(16,))
    params = _per_task_params(policy, len(tasks))
    env = envs.make_batched(ENV_ID, len(tasks) * 2)
    batch = sample_episodes(env, policy, params, tasks, episodes_per_task=2, seed=3, deterministic=True)

    assert batch.observations.shape == (3, 100, 2, 2)
    assert batch.actions.shape == (3, 100, 2, 2)
    assert batch.rewards.shape == batch.mask.shape == (3, 100, 2)
    for i, task in enumerate(tasks):
        single = gym.make(ENV_ID).unwrapped
        single.set_task(task)
        obs, _ = single.reset(seed=0)
        one = {k: v[i] for k, v in params.items()}
        total, steps = 0.0, 0
        for t in range(100):
            np.testing.assert_allclose(batch.observations[i, t, 0].numpy(), obs, atol=1e-6)
            with torch.no_grad():
                mean = policy.act(broadcast(one, 1), torch.as_tensor(obs, dtype=torch.float32).view(1, 1, 2),
                                  deterministic=True)[0, 0]
            obs, reward, terminated, _, _ = single.step(mean.numpy())
            total += reward
            steps += 1
            if terminated:
                break
        assert float(batch.mask[i, :, 0].sum()) == steps
        np.testing.assert_allclose(float(batch.rewards[i, :, 0].sum()), total, rtol=1e-5)


def test_terminated_steps_are_masked_and_carry_no_reward():
    # a goal at the origin is reached at once: the episode terminates after its first step
    tasks = [{"goal": (0.0, 0.0)}, {"goal": (0.5, 0.5)}]
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    params = broadcast({k: torch.zeros_like(v) for k, v in policy.init_params().items()}, 2)
    env = envs.make_batched(ENV_ID, 2)
    # all-zero weights and deterministic actions: the point never moves
    batch = sample_episodes(env, policy, params, tasks, episodes_per_task=1, seed=0, deterministic=True)
    assert batch.mask[0, :, 0].tolist() == [1.0] + [0.0] * 99
    assert float(batch.rewards[0, 1:, 0].abs().sum()) == 0.0
    assert float(batch.mask[1, :, 0].sum()) == 100  # never reaches a far goal with zero actions


def test_same_seed_same_episodes_other_seed_other_episodes():
    tasks = [{"goal": (0.2, 0.2)}, {"goal": (-0.2, 0.3)}]
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    params = broadcast(policy.init_params(torch.Generator().manual_seed(0)), 2)
    env = envs.make_batched(ENV_ID, 6)
    a = sample_episodes(env, policy, params, tasks, 3, seed=5)
    b = sample_episodes(env, policy, params, tasks, 3, seed=5)
    c = sample_episodes(env, policy, params, tasks, 3, seed=6)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards)
    assert not torch.equal(a.actions, c.actions)


def test_the_rollout_seed_seeds_mujocos_reset_noise():
    # without it a MuJoCo evaluation could not be reproduced
    env = envs.make_batched("metarl/HalfCheetahVel-v0", 2, num_threads=0)
    policy = GaussianMLPPolicy(env.observation_dim, env.action_dim, hidden_sizes=(4,))
    params = broadcast(policy.init_params(torch.Generator().manual_seed(0)), 1)
    a = sample_episodes(env, policy, params, [{"velocity": 1.0}], 2, seed=5)
    b = sample_episodes(env, policy, params, [{"velocity": 1.0}], 2, seed=5)
    assert torch.equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.observations[0, 0].numpy(), env.reset(seed=5).astype(np.float32))
    env.close()


def test_later_rounds_of_a_step_counted_batch_draw_from_derived_seeds():
    from metarl.sampling import sample_step_counted
    from metarl.seeding import derive_seed

    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(8,))
    params = broadcast(policy.init_params(torch.Generator().manual_seed(0)), 1)
    env = envs.make_batched("metarl/Navigation2D-v0", 1)
    far = [{"goal": (0.5, 0.5)}]
    batch = sample_step_counted(env, policy, params, far, episodes=1, batch_steps=150, seed=3)
    assert batch.episodes_per_task == 2
    second_round = sample_episodes(env, policy, params, far, 1, seed=derive_seed(3, 1))
    torch.testing.assert_close(batch.actions[:, :, 1:2], second_round.actions)
    assert not torch.equal(batch.actions[:, :, 0], batch.actions[:, :, 1])  # not the first round again
