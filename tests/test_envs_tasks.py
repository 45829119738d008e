"""Task validation shared by every env: one-line ValueErrors naming the key, the value and the range."""

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.tasks import Choice, Interval, sample_tasks, validate_task


@pytest.mark.parametrize(
    "env_id, task, words",
    [
        ("metarl/Navigation2D-v0", {"goal": (0.7, 0.0)}, ["'goal'", "0.7", "[-0.5, 0.5]^2"]),
        ("metarl/Navigation2D-v0", {"goal": (0.1,)}, ["'goal'", "(0.1,)", "should be 2 numbers, each in [-0.5, 0.5]"]),
        ("metarl/Navigation2D-v0", {"goal": (0.1, 0.1), "speed": 1}, ["unknown task key 'speed' with value 1", "'goal' in [-0.5, 0.5]^2"]),
        ("metarl/HalfCheetahVel-v0", {"velocity": 2.5}, ["'velocity'", "2.5", "[0, 2]"]),
        ("metarl/AntVel-v0", {"velocity": -0.1}, ["'velocity'", "-0.1", "[0, 3]"]),
        ("metarl/HalfCheetahDir-v0", {"direction": 0.5}, ["'direction'", "0.5", "{-1, +1}"]),
        ("metarl/AntDir-v0", {"direction": "left"}, ["'direction'", "'left' is not a number; it should be in {-1, +1}"]),
        ("metarl/AntDir-v0", {"direction": True}, ["'direction'", "True is not a number; it should be in {-1, +1}"]),
        ("metarl/HalfCheetahVel-v0", {"velocity": float("nan")}, ["'velocity'", "nan", "[0, 2]"]),
        ("metarl/HalfCheetahVel-v0", {"velocity": "1.0"}, ["'velocity'", "'1.0' is not a number; it should be in [0, 2]"]),
        ("metarl/AntVel-v0", {"velocity": [1.0]}, ["'velocity'", "[1.0]", "should be one number in [0, 3]"]),
        ("metarl/Navigation2D-v0", {"goal": 0.1}, ["'goal'", "0.1", "should be 2 numbers, each in [-0.5, 0.5]"]),
        ("metarl/Navigation2D-v0", {"goal": (0.1, None)}, ["'goal'", "(0.1, None) holds something other than a number; it should be in [-0.5, 0.5]^2"]),
        ("metarl/HalfCheetahVel-v0", {"direction": 1}, ["unknown task key 'direction' with value 1", "'velocity' in [0, 2]"]),
        ("metarl/AntDir-v0", {}, ["missing key 'direction'", "{-1, +1}"]),
    ],
)
def test_bad_tasks_are_one_line_errors_naming_key_value_range(env_id, task, words):
    env = gym.make(env_id).unwrapped
    with pytest.raises(ValueError) as info:
        env.set_task(task)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    batched = envs.make_batched(env_id, 1, **({} if "Navigation" in env_id else {"num_threads": 0}))
    with pytest.raises(ValueError, match="task"):
        batched.set_tasks([task])


def test_valid_tasks_come_back_as_plain_floats():
    space = {"goal": Interval(-0.5, 0.5, size=2), "direction": Choice((-1.0, 1.0))}
    clean = validate_task({"goal": np.array([0.5, -0.5]), "direction": np.int64(-1)}, space)
    assert clean == {"goal": (0.5, -0.5), "direction": -1.0}
    assert type(clean["goal"][0]) is float and type(clean["direction"]) is float
    # numpy scalars in array form (what indexing a 0-d array gives) are their numbers
    velocity = {"velocity": Interval(0.0, 2.0)}
    assert validate_task({"velocity": np.array(1.5)}, velocity) == {"velocity": 1.5}
    assert validate_task({"direction": np.array(1)}, {"direction": Choice((-1.0, 1.0))}) == {"direction": 1.0}


def test_sampled_tasks_validate_and_depend_only_on_the_seed():
    space = {"velocity": Interval(0.0, 2.0), "direction": Choice((-1.0, 1.0))}
    tasks = sample_tasks(space, 50, seed=9)
    assert [validate_task(t, space) for t in tasks] == tasks
    assert sample_tasks(space, 50, seed=9) == tasks and sample_tasks(space, 50, seed=10) != tasks
    with pytest.raises(ValueError, match="non-negative integer"):
        sample_tasks(space, -1)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_module_level_sampling_matches_the_env(env_id):
    env = gym.make(env_id).unwrapped
    assert envs.sample_tasks(env_id, 5, seed=1) == env.sample_tasks(5, seed=1)
    task = envs.sample_tasks(env_id, 1, seed=2)[0]
    assert envs.validate_task(env_id, task) == task


def test_unknown_env_id_is_named():
    with pytest.raises(ValueError, match="unknown env 'metarl/Nope-v0'"):
        envs.sample_tasks("metarl/Nope-v0", 1)
    with pytest.raises(ValueError, match="unknown env 'metarl/Nope-v0'"):
        envs.make_batched("metarl/Nope-v0", 1)


def test_navigation_goals_are_uniform_in_the_square_with_independent_coordinates():
    goals = np.array([t["goal"] for t in envs.sample_tasks("metarl/Navigation2D-v0", 2000, seed=3)])
    assert abs(np.corrcoef(goals.T)[0, 1]) < 0.1
    assert abs(goals.mean()) < 0.03 and 0.27 < goals.std() < 0.31  # U(-0.5, 0.5): 1 / sqrt(12) = 0.289


def test_task_keys_are_the_keys_of_every_sampled_task():
    for env_id in envs.ENV_IDS:
        keys = envs.task_keys(env_id)
        assert keys and all(list(task) == keys for task in envs.sample_tasks(env_id, 3, seed=0))
    assert envs.task_keys("metarl/Navigation2D-v0") == ["goal"]
