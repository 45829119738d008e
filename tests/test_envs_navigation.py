"""Navigation2D: reward definition, termination, tasks, batched == single, env checker."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

ENV_ID = "metarl/Navigation2D-v0"


def test_reward_and_clipping_match_definition():
    env = gym.make(ENV_ID)
    env.unwrapped.set_task({"goal": (0.3, -0.2)})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, truncated, _ = env.step(np.array([0.5, -0.04]))  # x is clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, -0.04])
    assert reward == pytest.approx(-np.hypot(0.1 - 0.3, -0.04 + 0.2))
    assert not terminated and not truncated


def test_terminates_only_when_both_coordinates_are_close():
    env = gym.make(ENV_ID)
    env.unwrapped.set_task({"goal": (0.1, 0.02)})
    env.reset(seed=0)
    _, _, terminated, _, _ = env.step(np.array([0.1, 0.0]))  # dx = 0, dy = 0.02
    assert not terminated
    _, reward, terminated, _, _ = env.step(np.array([0.0, 0.015]))  # dy = 0.005
    assert terminated and reward == pytest.approx(-0.005)


def test_truncates_after_100_steps():
    env = gym.make(ENV_ID)
    env.unwrapped.set_task({"goal": (0.5, 0.5)})
    env.reset(seed=0)
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(np.array([-0.1, -0.1]))
        assert not terminated
        assert truncated == (t == 99)


def test_task_sampling_range_and_seeding():
    env = gym.make(ENV_ID).unwrapped
    tasks = env.sample_tasks(2000, seed=3)
    goals = np.array([t["goal"] for t in tasks])
    assert goals.shape == (2000, 2)
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.45 and goals.max() > 0.45  # spread over the whole square
    assert env.sample_tasks(2000, seed=3) == tasks
    assert env.sample_tasks(3, seed=4) != env.sample_tasks(3, seed=5)


def test_batched_equals_single_over_an_episode():
    rng = np.random.default_rng(0)
    batched = envs.make_batched(ENV_ID, 6)
    tasks = batched.sample_tasks(6, seed=1)
    tasks[0] = {"goal": (0.05, 0.05)}  # one that terminates early
    batched.set_tasks(tasks)
    actions = rng.normal(0, 0.1, size=(100, 6, 2))
    actions[:, 0] = 0.01
    singles = [gym.make(ENV_ID) for _ in tasks]
    obs_b = batched.reset(seed=0)
    obs_s = []
    for env, task in zip(singles, tasks):
        env.unwrapped.set_task(task)
        obs_s.append(env.reset(seed=0)[0])
    np.testing.assert_array_equal(obs_b, obs_s)
    done = np.zeros(6, dtype=bool)
    for t in range(100):
        obs_b, rew_b, term_b = batched.step(actions[t])
        assert obs_b.dtype == np.float64 and rew_b.dtype == np.float64 and term_b.dtype == bool
        for i, env in enumerate(singles):
            if done[i]:
                continue
            obs, reward, terminated, _, _ = env.step(actions[t, i])
            np.testing.assert_array_equal(obs_b[i], obs)
            assert rew_b[i] == reward and term_b[i] == terminated
            done[i] = terminated
    assert done[0] and np.all(np.isfinite(obs_b))


def test_batched_rejects_wrong_number_of_tasks_and_bad_task():
    batched = envs.make_batched(ENV_ID, 2)
    with pytest.raises(ValueError, match="expects 2 tasks"):
        batched.set_tasks([{"goal": (0.0, 0.0)}])
    with pytest.raises(ValueError, match="'goal'"):
        batched.set_tasks([{"goal": (0.0, 0.0)}, {"goal": (0.0, 9.0)}])


def test_check_env_and_render():
    env = gym.make(ENV_ID, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # the position is unbounded, as in gymnasium's own envs; the checker only advises against it
        warnings.filterwarnings("ignore", message=r".*Box observation space m\w+ value is -?infinity")
        check_env(env.unwrapped, skip_render_check=False)
    env.reset(seed=0)
    env.step(np.array([0.1, 0.1]))
    image = env.render()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 3  # background, goal, point


def test_an_episode_ends_inside_the_goals_0_01_box_only():
    from envs.navigation import navigation_step

    position = np.zeros((4, 2))
    goals = np.array([[0.0, 0.0105], [0.0, 0.0095], [0.012, 0.0], [0.008, 0.008]])  # the last: in the box, not
    _, _, terminated = navigation_step(position, np.zeros((4, 2)), goals)          # within 0.01 of the centre
    assert terminated.tolist() == [False, True, False, True]
