"""Oracle observations: the task vector appended, batched equal to single, for every env."""

import numpy as np
import pytest

import envs


@pytest.mark.parametrize("env_id, dim", [("metarl/Navigation2D-v0", 2), ("metarl/HalfCheetahVel-v0", 1),
                                         ("metarl/AntDir-v0", 1)])
def test_oracle_observation_is_env_observation_then_task(env_id, dim):
    assert envs.task_dim(env_id) == dim
    tasks = envs.sample_tasks(env_id, 3, seed=1)
    plain, oracle = envs.make_batched(env_id, 3), envs.make_batched(env_id, 3, oracle=True)
    assert oracle.observation_dim == plain.observation_dim + dim
    for env in (plain, oracle):
        env.set_tasks(tasks)
    expected_tasks = np.array([np.atleast_1d(np.asarray(list(t.values())[0], dtype=float)) for t in tasks])
    obs_p, obs_o = plain.reset(seed=4), oracle.reset(seed=4)
    np.testing.assert_array_equal(obs_o, np.concatenate([obs_p, expected_tasks], axis=1))
    actions = np.random.default_rng(0).normal(size=(3, plain.action_dim))
    (obs_p, r_p, t_p), (obs_o, r_o, t_o) = plain.step(actions), oracle.step(actions)
    np.testing.assert_array_equal(obs_o, np.concatenate([obs_p, expected_tasks], axis=1))
    np.testing.assert_array_equal(r_o, r_p)
    np.testing.assert_array_equal(t_o, t_p)
    for env in (plain, oracle):
        env.close()

    single = envs.make(env_id, oracle=True)
    single.unwrapped.set_task(tasks[1])
    obs, _ = single.reset(seed=0)
    assert obs.shape == (oracle.observation_dim,) and single.observation_space.contains(obs)
    np.testing.assert_allclose(obs[-dim:], expected_tasks[1])
    single.close()


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/AntDir-v0"])  # navigation defaults to goal 0
def test_before_set_tasks_the_batched_oracle_shows_the_default_task_it_is_scored_on(env_id):
    oracle, single = envs.make_batched(env_id, 2, oracle=True), envs.make(env_id, oracle=True)
    default = envs.oracle.task_vector(single.unwrapped.get_task(), list(envs.sample_tasks(env_id, 1, seed=0)[0]))
    assert np.any(default != 0)  # else a zero vector would pass
    np.testing.assert_array_equal(oracle.reset(seed=0)[:, -default.size:], np.stack([default, default]))
    oracle.close()
    single.close()
