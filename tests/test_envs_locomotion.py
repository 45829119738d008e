"""HalfCheetah/Ant vel and dir: rewards from the simulator state, tasks, batched == single, seeding, rendering."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import physics
from envs.center_of_mass import PlanarCenterOfMass
from envs.locomotion import ANT, locomotion_reward

CHEETAH_IDS = ["metarl/HalfCheetahVel-v0", "metarl/HalfCheetahDir-v0"]
RLLAB_IDS = ["metarl/HalfCheetahVelRllab-v0", "metarl/HalfCheetahDirRllab-v0"]
ANT_RLLAB_IDS = ["metarl/AntVelRllab-v0", "metarl/AntDirRllab-v0"]
ANT_IDS = ["metarl/AntVel-v0", "metarl/AntDir-v0"]
MUJOCO_IDS = CHEETAH_IDS + ANT_IDS
DT = 0.05  # 5 physics steps of 0.01 s


def torso_position(model, qpos):
    """World position [3] of the torso body, from forward kinematics on a scratch MjData."""
    scratch = mujoco.MjData(model)
    scratch.qpos[:] = qpos
    mujoco.mj_kinematics(model, scratch)
    return scratch.body("torso").xpos.copy()


def expected_reward(env_id, task, model, qpos_before, qpos, qvel, action):
    """The reward and termination as the issue defines them, from MjData states before and after the step."""
    torso_before, torso_after = torso_position(model, qpos_before), torso_position(model, qpos)
    v = (torso_after[0] - torso_before[0]) / DT
    term = -abs(v - task["velocity"]) if "velocity" in task else task["direction"] * v
    a = np.clip(action, -1.0, 1.0)
    if env_id in CHEETAH_IDS:
        return term - 0.05 * np.sum(a**2), False
    healthy = 0.2 <= torso_after[2] <= 1.0 and np.all(np.isfinite(qpos)) and np.all(np.isfinite(qvel))
    return term - 0.5 * np.sum(a**2) + (1.0 if healthy else 0.0), not healthy


@pytest.mark.parametrize("env_id", MUJOCO_IDS)
def test_reward_observation_and_clipping_from_simulator_state(env_id):
    env = gym.make(env_id)
    core = env.unwrapped
    task = core.sample_tasks(1, seed=7)[0]
    core.set_task(task)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    skipped, obs_dim = (1, 17) if env_id in CHEETAH_IDS else (2, 27)
    for _ in range(20):
        action = rng.normal(0.0, 1.0, size=core.model.nu)  # often outside [-1, 1]
        qpos_before = core.data.qpos.copy()
        obs, reward, terminated, truncated, _ = env.step(action)
        qpos, qvel = core.data.qpos.copy(), core.data.qvel.copy()
        np.testing.assert_array_equal(core.data.ctrl, np.clip(action, -1, 1))
        assert obs.shape == (obs_dim,)
        np.testing.assert_array_equal(obs, np.concatenate([qpos[skipped:], qvel]))
        want_reward, want_terminated = expected_reward(env_id, task, core.model, qpos_before, qpos, qvel, action)
        assert reward == pytest.approx(want_reward, rel=1e-9, abs=1e-9)
        assert terminated == want_terminated and not truncated
        if terminated:
            break


def test_a_step_lasts_five_physics_steps():
    env = gym.make("metarl/HalfCheetahVel-v0").unwrapped
    env.reset(seed=0)
    env.step(np.zeros(6))
    assert env.data.time == pytest.approx(DT)


@pytest.mark.parametrize("env_id", ANT_IDS)
def test_ant_terminates_above_healthy_height_without_bonus(env_id):
    env = gym.make(env_id)
    core = env.unwrapped
    env.reset(seed=0)
    qpos, qvel = core.get_state()
    qpos[2] = 1.5  # dropped from 1.5 m: still above 1.0 after one 0.05 s step
    core.set_state(qpos, np.zeros_like(qvel))
    qpos_before = core.data.qpos.copy()
    _, reward, terminated, _, _ = env.step(np.zeros(8))
    assert terminated
    want, _ = expected_reward(env_id, core.get_task(), core.model, qpos_before, core.data.qpos, core.data.qvel, np.zeros(8))
    assert reward == pytest.approx(want)
    assert not 0.2 <= core.data.qpos[2] <= 1.0


def test_ant_health_below_height_and_non_finite():
    """A torso below 0.2 m cannot be reached by stepping (the floor pushes it up): check the shared rule directly."""
    qpos = np.tile(gym.make("metarl/AntVel-v0").unwrapped.model.qpos0, (4, 1))
    qvel = np.zeros((4, 14))
    qpos[0, 2], qpos[1, 2], qpos[2, 2] = 0.19, 0.2, 1.0
    qvel[3, 5] = np.nan
    rewards, terminated = locomotion_reward(ANT, "velocity", np.zeros(4), np.zeros(4), qpos, qvel, np.zeros((4, 8)))
    np.testing.assert_array_equal(terminated, [True, False, False, True])
    np.testing.assert_array_equal(rewards[:3], [0.0, 1.0, 1.0])


@pytest.mark.parametrize("env_id", CHEETAH_IDS)
def test_cheetah_never_terminates_and_truncates_at_200(env_id):
    env = gym.make(env_id)
    env.reset(seed=1)
    env.action_space.seed(1)
    for t in range(200):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        assert truncated == (t == 199)


@pytest.mark.parametrize("env_id, high", [("metarl/HalfCheetahVel-v0", 2.0), ("metarl/AntVel-v0", 3.0)])
def test_velocity_tasks_uniform_over_range(env_id, high):
    tasks = gym.make(env_id).unwrapped.sample_tasks(4000, seed=0)
    v = np.array([t["velocity"] for t in tasks])
    assert v.min() >= 0.0 and v.max() <= high
    assert abs(v.mean() - high / 2) < 0.05 * high and v.max() > 0.95 * high
    assert [set(t) for t in tasks[:3]] == [{"velocity"}] * 3


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahDir-v0", "metarl/AntDir-v0"])
def test_direction_tasks_are_plus_minus_one_evenly(env_id):
    env = gym.make(env_id).unwrapped
    d = np.array([t["direction"] for t in env.sample_tasks(4000, seed=0)])
    assert set(np.unique(d)) == {-1.0, 1.0}
    assert abs(d.mean()) < 0.05
    assert env.sample_tasks(10, seed=3) == env.sample_tasks(10, seed=3)


@pytest.mark.parametrize("env_id", MUJOCO_IDS + RLLAB_IDS + ANT_RLLAB_IDS)
def test_check_env(env_id):
    env = gym.make(env_id, render_mode="rgb_array", width=32, height=24)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # unbounded observations, as in gymnasium's own MuJoCo envs; the checker only advises against it
        warnings.filterwarnings("ignore", message=r".*Box observation space m\w+ value is -?infinity")
        check_env(env.unwrapped, skip_render_check=False)
    assert env.metadata["render_fps"] == round(1.0 / env.unwrapped.dt)  # a video plays in real time
    env.close()


@pytest.mark.parametrize("env_id", MUJOCO_IDS + RLLAB_IDS + ANT_RLLAB_IDS)
def test_batched_equals_single_over_a_full_episode(env_id):
    n = 5
    batched = envs.make_batched(env_id, n)
    tasks = batched.sample_tasks(n, seed=2)
    batched.set_tasks(tasks)
    obs_b = batched.reset(seed=3)
    qpos0, qvel0 = batched.get_state()
    singles = []
    for i, task in enumerate(tasks):
        env = gym.make(env_id).unwrapped
        env.set_task(task)
        env.reset(seed=0)
        np.testing.assert_array_equal(env.set_state(qpos0[i], qvel0[i]), obs_b[i])
        singles.append(env)
    rng = np.random.default_rng(4)
    done = np.zeros(n, dtype=bool)
    for t in range(batched.max_episode_steps):
        actions = rng.normal(0.0, 1.0, size=(n, batched.action_dim))
        obs_b, rew_b, term_b = batched.step(actions)
        assert obs_b.shape == (n, batched.observation_dim) and obs_b.dtype == np.float64
        assert rew_b.dtype == np.float64 and term_b.dtype == bool
        assert np.all(np.isfinite(obs_b))  # terminated envs keep running but stay finite
        for i, env in enumerate(singles):
            if done[i]:
                continue
            obs, reward, terminated, _, _ = env.step(actions[i])
            np.testing.assert_array_equal(obs_b[i], obs)  # bitwise: same MuJoCo steps from the same state
            assert rew_b[i] == reward and term_b[i] == terminated
            done[i] = terminated
    batched.close()


def test_batched_attributes_and_physics_only_step():
    batched = envs.make_batched("metarl/AntVel-v0", 3, num_threads=1)
    assert (batched.num_envs, batched.observation_dim, batched.action_dim, batched.max_episode_steps) == (3, 27, 8, 200)
    np.testing.assert_array_equal(batched.action_low, -np.ones(8))
    np.testing.assert_array_equal(batched.action_high, np.ones(8))
    batched.reset(seed=0)
    qpos, _ = batched.get_state()
    batched.step_physics(np.zeros((3, 8)))
    moved, _ = batched.get_state()
    assert not np.array_equal(qpos, moved)
    with pytest.raises(ValueError, match="expects 3 tasks"):
        batched.set_tasks([{"velocity": 1.0}])
    with pytest.raises(ValueError, match=r"shape \(3, 8\)"):
        batched.step(np.zeros((3, 6)))
    batched.close()
    with pytest.raises(RuntimeError, match="closed"):
        batched.step(np.zeros((3, 8)))


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahDir-v0", "metarl/AntVel-v0"])
def test_seeding_is_reproducible(env_id):
    env = gym.make(env_id)
    first = env.reset(seed=11)[0]
    np.testing.assert_array_equal(env.reset(seed=11)[0], first)
    assert not np.array_equal(env.reset(seed=12)[0], first)
    batched = envs.make_batched(env_id, 4, num_threads=0)
    obs = batched.reset(seed=5)
    np.testing.assert_array_equal(batched.reset(seed=5), obs)
    assert not np.array_equal(obs[0], obs[1])  # every env gets its own noise
    qpos, qvel = batched.get_state()
    model = batched.model
    assert np.all(np.abs(qpos - model.qpos0) <= 0.1) and np.abs(qpos - model.qpos0).max() > 0.05
    assert 0.05 < qvel.std() < 0.15


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/AntDir-v0"])
def test_render_returns_an_image(env_id):
    env = gym.make(env_id, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    image = env.render()
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10
    env.close()


def test_no_warnings_and_no_mujoco_log_file(tmp_path):
    """Every env built, stepped and rendered with warnings as errors leaves nothing in the cwd."""
    script = """
import warnings
warnings.simplefilter("error")
import numpy as np, gymnasium as gym, envs
for env_id in envs.ENV_IDS:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    env.render()
    env.close()
    batched = envs.make_batched(env_id, 2)
    batched.reset(seed=0)
    batched.step(np.zeros((2, batched.action_dim)))
print("ok")
"""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), MUJOCO_GL="egl")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_unstable_simulation_warns_through_logging_not_a_file(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    env = gym.make("metarl/AntVel-v0").unwrapped
    env.reset(seed=0)
    qpos, qvel = env.get_state()
    monkeypatch.setattr(physics, "_warned_kinds", set())  # another test may have logged this kind already
    with caplog.at_level("WARNING", logger="envs.mujoco"):
        for _ in range(3):  # the same instability three times: one line
            env.set_state(qpos, np.full_like(qvel, 1e12))
            env.step(np.zeros(8))
    assert len(caplog.records) == 1 and "unstable" in caplog.records[0].getMessage()
    assert "further warnings of this kind are not shown" in caplog.records[0].getMessage()
    # a diverged policy's NaN actions in the batched envs: every env at every step warns, one line is logged
    batched = envs.make_batched("metarl/HalfCheetahVel-v0", 4)
    batched.reset(seed=0)
    with caplog.at_level("WARNING", logger="envs.mujoco"):
        for _ in range(3):
            batched.step(np.full((4, batched.action_dim), np.nan))
    assert [r.getMessage().split(" at ")[0] for r in caplog.records[1:]] == ["MuJoCo: Nan, Inf or huge value in CTRL"]
    batched.close()
    assert np.all(np.isfinite(env.data.qpos))  # MuJoCo reset the diverged simulation
    assert list(tmp_path.iterdir()) == []
    assert mujoco.get_mju_user_warning() is not None


def mujoco_center_of_mass(model, qpos, qvel):
    """MuJoCo's whole-robot centre of mass and its velocity (subtree of the torso) on a scratch MjData."""
    scratch = mujoco.MjData(model)
    scratch.qpos[:], scratch.qvel[:] = qpos, qvel
    mujoco.mj_forward(model, scratch)
    mujoco.mj_subtreeVel(model, scratch)
    torso = scratch.body("torso").id
    return scratch.subtree_com[torso].copy(), scratch.subtree_linvel[torso].copy()


def test_planar_center_of_mass_matches_mujoco():
    model = gym.make("metarl/HalfCheetahVelRllab-v0").unwrapped.model
    rng = np.random.default_rng(0)
    qpos = model.qpos0 + rng.normal(0.0, 0.7, size=(16, model.nq))  # far from rest: large angles
    qvel = rng.normal(0.0, 3.0, size=(16, model.nv))
    position, velocity = PlanarCenterOfMass(model)(qpos, qvel)
    for i in range(16):
        want_position, want_velocity = mujoco_center_of_mass(model, qpos[i], qvel[i])
        np.testing.assert_allclose(position[i], want_position, rtol=0, atol=1e-12)
        np.testing.assert_allclose(velocity[i], want_velocity, rtol=0, atol=1e-12)


def test_planar_center_of_mass_refuses_a_non_planar_model():
    with pytest.raises(ValueError, match="not planar|root body"):
        PlanarCenterOfMass(gym.make("metarl/AntVel-v0").unwrapped.model)


def started_with_a_test_task(env_id):
    """(env, env.unwrapped, task): velocity 1.3 or direction -1 set, reset with seed 0."""
    env = gym.make(env_id)
    task = {"velocity": 1.3} if "Vel" in env_id else {"direction": -1.0}
    env.unwrapped.set_task(task)
    env.reset(seed=0)
    return env, env.unwrapped, task


@pytest.mark.parametrize("env_id", RLLAB_IDS)
def test_rllab_cheetah_reward_and_observation_from_simulator_state(env_id):
    """rllab's conventions (the MAML paper's): 0.01 s steps, reward on the centre of mass's velocity after the
    step, observation qpos[1:], qvel, centre of mass."""
    env, core, task = started_with_a_test_task(env_id)
    rng = np.random.default_rng(1)
    for t in range(30):
        action = rng.normal(0.0, 1.0, size=core.model.nu)
        obs, reward, terminated, truncated, _ = env.step(action)
        assert core.data.time == pytest.approx(0.01 * (t + 1))
        qpos, qvel = core.data.qpos.copy(), core.data.qvel.copy()
        com, com_velocity = mujoco_center_of_mass(core.model, qpos, qvel)
        assert obs.shape == (20,)
        np.testing.assert_allclose(obs, np.concatenate([qpos[1:], qvel, com]), rtol=0, atol=1e-12)
        v = com_velocity[0]
        term = -abs(v - task["velocity"]) if "velocity" in task else task["direction"] * v
        a = np.clip(action, -1.0, 1.0)
        assert reward == pytest.approx(term - 0.05 * np.sum(a**2), rel=1e-9, abs=1e-9)
        assert not terminated and not truncated


def test_rllab_cheetah_reset_noise():
    batched = envs.make_batched("metarl/HalfCheetahVelRllab-v0", 400, num_threads=0)
    batched.reset(seed=0)
    qpos, qvel = batched.get_state()
    assert 0.008 < (qpos - batched.model.qpos0).std() < 0.012  # 0.01 * N(0, 1)
    assert 0.09 < qvel.std() < 0.11  # 0.1 * N(0, 1)
    assert batched.velocity_index == 8 and batched.observation_dim == 20


def contact_forces_from_contacts(model, data):
    """cfrc_ext [nbody, 6] rebuilt from the contact list: each contact's wrench (mj_contactForce, contact frame)
    turned to the world, moved to the centre of mass of the body's tree, added to geom2's body, taken from geom1's."""
    forces = np.zeros((model.nbody, 6))
    wrench = np.zeros(6)
    for i in range(data.ncon):
        contact = data.contact[i]
        mujoco.mj_contactForce(model, data, i, wrench)
        frame = contact.frame.reshape(3, 3)  # rows: normal, tangents
        force, torque = frame.T @ wrench[:3], frame.T @ wrench[3:]
        for geom, sign in ((contact.geom1, -1.0), (contact.geom2, 1.0)):
            body = model.geom_bodyid[geom]
            if body == 0:
                continue
            arm = contact.pos - data.subtree_com[model.body_rootid[body]]
            forces[body] += sign * np.concatenate([torque + np.cross(arm, force), force])
    return forces


def rllab_ant_readout(model, qpos, qvel, ctrl):
    """What rllab's ant observes after a step, computed independently of envs.physics on a scratch MjData: contact
    forces from the contact list, the torso's rotation from its quaternion, the centre of mass and its velocity as
    rllab computed it (mass-weighted velocities of every body's centre of mass, mj_objectVelocity)."""
    scratch = mujoco.MjData(model)
    scratch.qpos[:], scratch.qvel[:], scratch.ctrl[:] = qpos, qvel, ctrl
    mujoco.mj_forward(model, scratch)
    xmat = np.zeros(9)
    mujoco.mju_quat2Mat(xmat, qpos[3:7] / np.linalg.norm(qpos[3:7]))
    masses = model.body_mass[1:]
    com = (masses[:, None] * scratch.xipos[1:]).sum(axis=0) / masses.sum()
    velocity = np.zeros((model.nbody, 6))
    for body in range(1, model.nbody):
        mujoco.mj_objectVelocity(model, scratch, mujoco.mjtObj.mjOBJ_BODY, body, velocity[body], 0)
    com_velocity = (masses[:, None] * velocity[1:, 3:]).sum(axis=0) / masses.sum()
    return contact_forces_from_contacts(model, scratch), xmat, com, com_velocity


def test_rllab_ant_model_and_reset():
    """rllab's ant.xml: one 0.02 s RK4 step per action, actions in [-1, 1] give +-150 N m (rllab's normalize wrapper
    over its gearless +-150 motors), 125 observations; resets
    add 0.01 N(0, 1) to rllab's standing pose and 0.1 N(0, 1) to zero velocities."""
    batched = envs.make_batched("metarl/AntVelRllab-v0", 400, num_threads=0)
    model = batched.model
    assert model.opt.timestep == 0.02 and model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    np.testing.assert_array_equal(batched.action_high, np.ones(8))
    np.testing.assert_array_equal(model.actuator_gear[:, 0], np.full(8, 150.0))
    assert (batched.observation_dim, batched.velocity_index, batched.dt) == (125, 15, 0.02)
    stand = np.array([0, 0, 0.55, 1, 0, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1])
    batched.reset(seed=0)
    qpos, qvel = batched.get_state()
    assert np.abs(qpos.mean(axis=0) - stand).max() < 0.003
    assert 0.009 < (qpos - stand).std() < 0.011 and 0.09 < qvel.std() < 0.11
    env = gym.make("metarl/AntVelRllab-v0").unwrapped
    env.reset(seed=0)
    for t in range(3):
        env.step(np.zeros(8))
        assert env.data.time == pytest.approx(0.02 * (t + 1))


@pytest.mark.parametrize("env_id", ANT_RLLAB_IDS)
def test_rllab_ant_reward_and_observation_from_simulator_state(env_id):
    """Observation qpos, qvel, clip(cfrc_ext), torso rotation, centre of mass; reward (1 for velocity tasks) + 0.05 +
    task term - 0.005 ||a||^2 - 0.0005 ||clip(cfrc_ext)||^2, all checked against an independent readout."""
    env, core, task = started_with_a_test_task(env_id)
    rng = np.random.default_rng(1)
    in_contact = 0
    for _ in range(40):
        action = rng.normal(0.0, 0.8, size=8)  # often outside [-1, 1]
        obs, reward, terminated, truncated, _ = env.step(action)
        qpos, qvel = core.data.qpos.copy(), core.data.qvel.copy()
        a = np.clip(action, -1.0, 1.0)
        np.testing.assert_array_equal(core.data.ctrl, a)
        contacts, xmat, com, com_velocity = rllab_ant_readout(core.model, qpos, qvel, a)
        contacts = np.clip(contacts, -1.0, 1.0).ravel()
        in_contact += np.count_nonzero(contacts) > 0
        assert obs.shape == (125,)
        np.testing.assert_array_equal(obs[:29], np.concatenate([qpos, qvel]))
        np.testing.assert_allclose(obs[29:], np.concatenate([contacts, xmat, com]), rtol=0, atol=1e-8)
        v = com_velocity[0]
        term = 1.0 - abs(v - task["velocity"]) if "velocity" in task else task["direction"] * v
        want = term - 0.005 * np.sum(a**2) - 0.0005 * np.sum(contacts**2) + 0.05
        assert reward == pytest.approx(want, rel=1e-8, abs=1e-8)
        assert terminated == (not 0.2 <= qpos[2] <= 1.0) and not truncated
        if terminated:
            break
    assert in_contact > 10  # the feet touch the floor: the contact terms are exercised


def test_rllab_ant_pays_the_survival_bonus_on_the_last_step():
    env = gym.make("metarl/AntDirRllab-v0")
    core = env.unwrapped
    core.set_task({"direction": 1.0})
    env.reset(seed=0)
    qpos, qvel = core.get_state()
    qpos[2] = 1.5  # dropped from 1.5 m, in the air: no contact, still above 1.0 after 0.02 s
    core.set_state(qpos, np.zeros_like(qvel))
    _, reward, terminated, _, _ = env.step(np.zeros(8))
    _, _, _, com_velocity = rllab_ant_readout(core.model, core.data.qpos, core.data.qvel, np.zeros(8))
    assert terminated and core.data.qpos[2] > 1.0
    assert reward == pytest.approx(com_velocity[0] + 0.05, rel=1e-9, abs=1e-12)


def test_rllab_ant_batch_is_the_same_for_any_thread_count():
    results = []
    for threads in (0, 1, 2, 3):
        batched = envs.make_batched("metarl/AntDirRllab-v0", 7, num_threads=threads)
        batched.set_tasks(batched.sample_tasks(7, seed=0))
        observations = [batched.reset(seed=1)]
        rng = np.random.default_rng(2)
        for _ in range(20):
            observations.append(batched.step(rng.normal(0.0, 0.7, size=(7, 8)))[0])
        batched.close()
        results.append(np.stack(observations))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_rllab_ant_worker_processes_end_with_close_and_a_lost_worker_is_an_error():
    batched = envs.make_batched("metarl/AntVelRllab-v0", 6, num_threads=3)
    workers = [w.process for w in batched.physics._workers]
    assert len(workers) == 2 and all(w.poll() is None for w in workers)
    batched.reset(seed=0)
    batched.close()
    assert all(w.poll() is not None for w in workers)  # closed, not left running
    with pytest.raises(RuntimeError, match="closed"):
        batched.step(np.zeros((6, 8)))

    batched = envs.make_batched("metarl/AntVelRllab-v0", 6, num_threads=2)
    batched.reset(seed=0)
    worker = batched.physics._workers[0].process
    worker.kill()
    worker.wait()
    with pytest.raises(RuntimeError, match="physics worker .*ended unexpectedly"):  # an error, not a hang
        batched.step(np.zeros((6, 8)))
    with pytest.raises(RuntimeError, match="closed"):  # the half-stepped batch is not reused
        batched.step(np.zeros((6, 8)))


def test_peak_memory_counts_the_physics_workers():
    import resource

    from metarl.training import peak_rss_mb

    batched = envs.make_batched("metarl/AntVelRllab-v0", 4, num_threads=2)
    worker = batched.physics._workers[0].process.pid
    hwm = [int(line.split()[1]) for line in Path(f"/proc/{worker}/status").read_text().splitlines()
           if line.startswith("VmHWM:")][0]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert hwm > 10_000 and peak_rss_mb() >= (own + hwm) / 1024  # >= : other children may run too
    batched.close()


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/AntVel-v0"])
def test_gymnasium_convention_reset_noise_is_centred_with_its_documented_spread(env_id):
    batched = envs.make_batched(env_id, 400, num_threads=0)
    batched.reset(seed=0)
    qpos, qvel = batched.get_state()
    offset = qpos - batched.model.qpos0
    assert abs(offset.mean()) < 0.005 and offset.min() < -0.099 and offset.max() > 0.099
    assert 0.055 < offset.std() < 0.06  # U(-0.1, 0.1): 0.1 / sqrt(3) = 0.0577
    assert abs(qvel.mean()) < 0.01 and 0.095 < qvel.std() < 0.105  # 0.1 N(0, 1)
    batched.close()
