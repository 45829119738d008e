"""HalfCheetah and Ant with goal-velocity and goal-direction tasks (Finn et al. 2017, section 5.3).

Two conventions of the cheetah exist, and the task terms are the same in both:

- velocity task ``{"velocity": v_goal}``: ``-|v - v_goal|``
- direction task ``{"direction": d}``, ``d`` in {-1, +1}: ``d * v``

**gymnasium's** (``HalfCheetahVel-v0`` / ``HalfCheetahDir-v0``, and the Ant): the robot
acts every ``dt = 5 x 0.01 s = 0.05 s`` (an action is clipped to ``[-1, 1]^nu`` and held
for the 5 physics steps), so a 200-step episode lasts 10 s; ``v`` is the forward (x)
displacement of the torso over the step divided by ``dt`` (m/s); resets add
``U(-0.1, 0.1)`` to every qpos entry and ``0.1 * N(0, 1)`` to every qvel entry of the
model's initial state, as gymnasium's v5 envs do.

**rllab's** (``HalfCheetahVelRllab-v0`` / ``HalfCheetahDirRllab-v0``), the one the MAML
paper's cheetah numbers come from (cbfinn/maml_rl on rllab): one 0.01 s physics step per
action, so a 200-step episode lasts 2 s; ``v`` is the x-velocity of the
whole robot's centre of mass after the step (MuJoCo's ``subtree_linvel`` of the torso,
computed by ``envs.center_of_mass``); the observation ends with that centre of mass
(x, y, z in m); resets add ``0.01 * N(0, 1)`` to qpos and ``0.1 * N(0, 1)`` to qvel. Same
model file, masses and motors as the gymnasium cheetah (rllab's and gym's XML describe the
same robot), so this one samples five times as many steps per second of physics.

The reward is

- HalfCheetah: ``task term - 0.05 * ||a||^2``; never terminates; observation
  ``qpos[1:], qvel`` (17; 20 with rllab's centre of mass); ``v_goal ~ U[0, 2]``.
- Ant: ``task term - 0.5 * ||a||^2 + 1 * healthy``, where healthy means qpos
  and qvel are finite and the torso height ``qpos[2]`` is in ``[0.2, 1.0]``; the
  episode terminates on the first unhealthy step (which earns no survival
  bonus). No contact cost, and no contact forces in the observation
  ``qpos[2:], qvel`` (27), as gymnasium's Ant-v4 defaults. ``v_goal ~ U[0, 3]``.

**rllab's ant** (``AntVelRllab-v0`` / ``AntDirRllab-v0``), the MAML paper's Ant
(cbfinn/maml_rl's ``ant_env_rand.py`` / ``ant_env_rand_direc.py`` on rllab's ``ant.xml``; own
asset ``ant_rllab.xml``): one RK4 step of 0.02 s per action (a 200-step episode lasts 4 s);
the same robot and torques as the gymnasium ant (actions in [-1, 1] times 150 N m, as rllab's
``normalize`` wrapper that the MAML experiments used maps them); the ant starts standing
(rllab's initial pose) with rllab's reset noise. After every step a forward pass reads the external contact forces
``cfrc_ext`` of all 14 bodies (``envs.physics.forward_readout``), and

- observation: ``qpos, qvel, clip(cfrc_ext, -1, 1), torso rotation matrix, centre of mass``
  (15 + 14 + 84 + 9 + 3 = 125);
- ``v`` is the x-velocity of the whole robot's centre of mass (the torso's subtree);
- reward: ``task term - 0.005 * ||a||^2 - 0.0005 * ||clip(cfrc_ext, -1, 1)||^2 + 0.05``,
  where the velocity task adds 1 to its term (``1 - |v - v_goal|``) and the direction task
  does not; the 0.05 is paid on every step, the one that ends the episode included; the
  episode ends when the torso height leaves ``[0.2, 1.0]`` or the state is not finite.
  ``v_goal ~ U[0, 3]``; directions +-1.

Episodes are truncated after 200 steps.

``Readout`` (observation, velocity, reward, termination) and ``reset_noise`` are the one
definition of each, used by the single gymnasium envs and by ``BatchedLocomotion``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from envs.center_of_mass import PlanarCenterOfMass
from envs.physics import BatchedPhysics, ReadoutPhysics, forward_readout, forward_size, load_model, step_cold
from envs.tasks import Choice, Interval, TaskSpace, sample_tasks, validate_task, validate_tasks

RESET_NOISE = 0.1
MAX_EPISODE_STEPS = 200


@dataclass(frozen=True)
class Robot:
    """What differs between the cheetah and the ant: the model and the non-task reward terms."""

    xml: str
    frame_skip: int
    skipped_qpos: int  # leading qpos entries left out of the observation (the torso's x, or x and y)
    ctrl_cost_weight: float  # per squared unit of the (clipped) action
    healthy_reward: float
    healthy_z: tuple[float, float] | None  # None: never terminates
    rllab: bool = False  # rllab's conventions: centre-of-mass velocity and observation, rllab's reset noise
    # rllab's ant: observation and reward read from a forward pass after each step (contact forces)
    forward_readout: bool = False
    contact_cost_weight: float = 0.0  # per squared clipped contact-force entry
    velocity_bonus: float = 0.0  # added to the velocity task's term (rllab's ant: 1, so that staying up pays)


HALF_CHEETAH = Robot("half_cheetah.xml", frame_skip=5, skipped_qpos=1, ctrl_cost_weight=0.05, healthy_reward=0.0, healthy_z=None)
HALF_CHEETAH_RLLAB = Robot("half_cheetah.xml", frame_skip=1, skipped_qpos=1, ctrl_cost_weight=0.05, healthy_reward=0.0,
                           healthy_z=None, rllab=True)
ANT = Robot("ant.xml", frame_skip=5, skipped_qpos=2, ctrl_cost_weight=0.5, healthy_reward=1.0, healthy_z=(0.2, 1.0))
ANT_RLLAB = Robot("ant_rllab.xml", frame_skip=1, skipped_qpos=0, ctrl_cost_weight=0.005, healthy_reward=0.05,
                  healthy_z=(0.2, 1.0), rllab=True, forward_readout=True, contact_cost_weight=0.0005, velocity_bonus=1.0)


class Readout:
    """What an env step reports from the simulator state, for any number of states at once.

    ``observation(qpos [N, nq], qvel [N, nv], forward) -> [N, obs_dim]``: qpos without the torso's
    horizontal position, then qvel (and, with rllab's conventions, the centre of mass [3]); for
    rllab's ant all of qpos, qvel, then from ``forward`` (``[N, forward_size]``, the rows of
    ``envs.physics.forward_readout``; None for other robots) the clipped contact forces, the
    torso's rotation matrix and the centre of mass.
    ``step(goals [N], x_before [N], qpos, qvel, actions [N, nu], forward) -> (obs, rewards [N]
    float64, terminated [N] bool)`` after a step: goals are velocities (m/s) or directions (+-1),
    ``x_before`` the torso's x before the step (m), actions already clipped.
    """

    def __init__(self, robot: Robot, model: mujoco.MjModel, task_key: str):
        self.robot, self.task_key = robot, task_key
        self.dt = model.opt.timestep * robot.frame_skip
        self.com = PlanarCenterOfMass(model) if robot.rllab and not robot.forward_readout else None
        self.contacts = 6 * model.nbody  # forward[:, :contacts] are cfrc_ext; then xmat [9], com [3], its velocity [3]
        extra = forward_size(model) - 3 if robot.forward_readout else 3 if robot.rllab else 0
        self.observation_dim = model.nq - robot.skipped_qpos + model.nv + extra
        self.velocity_index = model.nq - robot.skipped_qpos  # where qvel[0], the torso's x-velocity, sits

    def _observe(self, qpos: np.ndarray, qvel: np.ndarray,
                 forward: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(observations, centre-of-mass x-velocity [N] or None, clipped contact forces [N, 6 nbody] or None)."""
        parts = [qpos[:, self.robot.skipped_qpos :], qvel]
        com_velocity = contacts = None
        if self.robot.forward_readout:
            contacts = np.clip(forward[:, : self.contacts], -1.0, 1.0)
            parts += [contacts, forward[:, self.contacts : -3]]
            com_velocity = forward[:, -3]
        elif self.com is not None:
            com, velocity = self.com(qpos, qvel)
            parts.append(com)
            com_velocity = velocity[:, 0]
        return np.concatenate(parts, axis=1), com_velocity, contacts

    def observation(self, qpos: np.ndarray, qvel: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
        return self._observe(qpos, qvel, forward)[0]

    def step(self, goals: np.ndarray, x_before: np.ndarray, qpos: np.ndarray, qvel: np.ndarray,
             actions: np.ndarray, forward: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, com_velocity, contacts = self._observe(qpos, qvel, forward)
        velocity = com_velocity if com_velocity is not None else (qpos[:, 0] - x_before) / self.dt
        rewards, terminated = locomotion_reward(self.robot, self.task_key, goals, velocity, qpos, qvel, actions, contacts)
        return obs, rewards, terminated


def locomotion_reward(
    robot: Robot,
    task_key: str,
    goals: np.ndarray,
    velocity: np.ndarray,
    qpos: np.ndarray,
    qvel: np.ndarray,
    actions: np.ndarray,
    contacts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards ``[N]`` float64 and terminated ``[N]`` bool of one step.

    goals: ``[N]`` goal velocity (m/s) or direction (+-1); velocity: ``[N]`` the forward
    velocity the task term scores (m/s); qpos, qvel: ``[N, nq]``, ``[N, nv]`` after the step;
    actions: ``[N, nu]`` already clipped; contacts: ``[N, 6 nbody]`` clipped contact forces
    (robots with a contact cost only).
    """
    if task_key == "velocity":
        task_term = robot.velocity_bonus - np.abs(velocity - goals)
    else:
        task_term = goals * velocity
    rewards = task_term - robot.ctrl_cost_weight * np.einsum("ij,ij->i", actions, actions)
    if robot.contact_cost_weight:
        rewards = rewards - robot.contact_cost_weight * np.einsum("ij,ij->i", contacts, contacts)
    if robot.healthy_z is None:
        return rewards, np.zeros(len(rewards), dtype=bool)
    low, high = robot.healthy_z
    z = qpos[:, 2]
    healthy = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1) & (z >= low) & (z <= high)
    # gymnasium pays the survival bonus only while healthy, rllab on the terminating step too
    paid = np.ones_like(healthy) if robot.rllab else healthy
    return rewards + robot.healthy_reward * paid, ~healthy


def reset_noise(robot: Robot, model: mujoco.MjModel, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` initial states qpos ``[n, nq]``, qvel ``[n, nv]`` around the model's: gymnasium's
    qpos0 + U(-0.1, 0.1), 0.1 * N(0, 1), or rllab's q_init + 0.01 * N(0, 1), 0.1 * N(0, 1), where
    q_init is the asset's keyframe "init" if it has one (rllab's standing ant), else qpos0."""
    if robot.rllab:
        q_init = model.key("init").qpos if model.nkey else model.qpos0
        qpos = q_init + 0.01 * rng.standard_normal(size=(n, model.nq))
    else:
        qpos = model.qpos0 + rng.uniform(-RESET_NOISE, RESET_NOISE, size=(n, model.nq))
    qvel = RESET_NOISE * rng.standard_normal(size=(n, model.nv))
    return qpos, qvel


class LocomotionEnv(gym.Env):
    """One robot, one task; subclasses fix ``robot`` and ``task_space`` (a single key).

    ``data`` is the live ``mujoco.MjData``; ``set_state`` / ``get_state`` move
    (qpos, qvel) in and out, e.g. to compare with the batched form.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}  # 1 / dt, set per robot at construction
    robot: ClassVar[Robot]
    task_space: ClassVar[TaskSpace]
    default_task: ClassVar[dict[str, float]]

    def __init__(self, task: dict[str, Any] | None = None, render_mode: str | None = None, width: int = 480, height: int = 480):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported (choose from {self.metadata['render_modes']})")
        self.render_mode = render_mode
        self.width, self.height = width, height
        self.model = load_model(self.robot.xml)
        self.data = mujoco.MjData(self.model)
        self.task_key = next(iter(self.task_space))
        self.readout = Readout(self.robot, self.model, self.task_key)
        self.dt = self.readout.dt
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}  # videos play in real time
        # rllab's ant: the latest forward_readout of this env (contact forces etc.), [1, forward_size]
        self._forward = np.zeros((1, forward_size(self.model))) if self.robot.forward_readout else None
        self._torso = self.model.body("torso").id
        low, high = self.model.actuator_ctrlrange.T.copy()
        self._action_low, self._action_high = low, high
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(self.readout.observation_dim,), dtype=np.float64)
        self._renderer: mujoco.Renderer | None = None
        self._task: dict[str, float] = {}
        self._goal = np.zeros(1)
        self.set_task(task if task is not None else self.default_task)

    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        return sample_tasks(self.task_space, n, seed)

    def set_task(self, task: dict[str, Any]) -> None:
        self._task = validate_task(task, self.task_space)
        self._goal[0] = self._task[self.task_key]

    def get_task(self) -> dict[str, Any]:
        return dict(self._task)

    def _observation(self) -> np.ndarray:
        return self.readout.observation(self.data.qpos[None], self.data.qvel[None], self._forward)[0]

    def _read_forward(self) -> None:
        """Run the post-step forward pass that rllab's ant observes (no-op for the other robots)."""
        if self._forward is not None:
            forward_readout(self.model, self.data, self._torso, self._forward[0])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        qpos, qvel = reset_noise(self.robot, self.model, self.np_random, 1)
        mujoco.mj_resetData(self.model, self.data)
        return self.set_state(qpos[0], qvel[0]), {"task": self.get_task()}

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Place the robot (``qpos [nq]``, ``qvel [nv]``, zero controls); returns the observation."""
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        self.data.ctrl[:] = 0.0
        if self._forward is None:
            mujoco.mj_forward(self.model, self.data)
        self._read_forward()  # rllab's ant: its readout runs the forward pass
        return self._observation()

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``qpos [nq]`` and ``qvel [nv]``."""
        return self.data.qpos.copy(), self.data.qvel.copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float64), self._action_low, self._action_high)
        x_before = self.data.qpos[:1].copy()
        step_cold(self.model, self.data, action, self.robot.frame_skip)
        self._read_forward()
        obs, reward, terminated = self.readout.step(self._goal, x_before, self.data.qpos[None], self.data.qvel[None],
                                                    action[None], self._forward)
        return obs[0], float(reward[0]), bool(terminated[0]), False, {"task": self.get_task()}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
        mujoco.mj_forward(self.model, self.data)  # mj_step leaves body poses of the step's start; the state is unchanged
        self._renderer.update_scene(self.data, camera="track")
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class HalfCheetahVelEnv(LocomotionEnv):
    """HalfCheetah running at a goal velocity ``{"velocity": v}``, v in [0, 2] m/s."""

    robot = HALF_CHEETAH
    task_space = {"velocity": Interval(0.0, 2.0)}
    default_task = {"velocity": 1.0}


class HalfCheetahDirEnv(LocomotionEnv):
    """HalfCheetah running forward (``{"direction": 1}``) or backward (``-1``)."""

    robot = HALF_CHEETAH
    task_space = {"direction": Choice((-1.0, 1.0))}
    default_task = {"direction": 1.0}


class HalfCheetahVelRllabEnv(HalfCheetahVelEnv):
    """``HalfCheetahVelEnv`` with rllab's conventions (the MAML paper's): 0.01 s steps, centre-of-mass velocity."""

    robot = HALF_CHEETAH_RLLAB


class HalfCheetahDirRllabEnv(HalfCheetahDirEnv):
    """``HalfCheetahDirEnv`` with rllab's conventions (the MAML paper's): 0.01 s steps, centre-of-mass velocity."""

    robot = HALF_CHEETAH_RLLAB


class AntVelEnv(LocomotionEnv):
    """Ant walking along x at a goal velocity ``{"velocity": v}``, v in [0, 3] m/s."""

    robot = ANT
    task_space = {"velocity": Interval(0.0, 3.0)}
    default_task = {"velocity": 1.5}


class AntDirEnv(LocomotionEnv):
    """Ant walking forward (``{"direction": 1}``) or backward (``-1``) along x."""

    robot = ANT
    task_space = {"direction": Choice((-1.0, 1.0))}
    default_task = {"direction": 1.0}


class AntVelRllabEnv(AntVelEnv):
    """``AntVelEnv`` with rllab's ant (the MAML paper's): 0.02 s RK4 steps, contact forces, centre-of-mass velocity."""

    robot = ANT_RLLAB


class AntDirRllabEnv(AntDirEnv):
    """``AntDirEnv`` with rllab's ant (the MAML paper's): 0.02 s RK4 steps, contact forces, centre-of-mass velocity."""

    robot = ANT_RLLAB


class BatchedLocomotion:
    """``num_envs`` (task, episode) pairs of one ``LocomotionEnv`` class, stepped in threads (``envs.physics``).

    Same clipping, observation, reward and termination as the single env (the
    shared functions above); an env that terminated keeps being simulated (MuJoCo
    resets a diverging simulation, so states stay finite) and the sampler masks it.
    """

    max_episode_steps = MAX_EPISODE_STEPS

    def __init__(self, env_class: type[LocomotionEnv], num_envs: int, num_threads: int = 2):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.robot = env_class.robot
        self.task_space = env_class.task_space
        self.task_key = next(iter(self.task_space))
        self.model = load_model(self.robot.xml)
        self.readout = Readout(self.robot, self.model, self.task_key)
        self.dt = self.readout.dt
        self.action_dim = self.model.nu
        self.observation_dim = self.readout.observation_dim
        self.velocity_index = self.readout.velocity_index
        self.action_low, self.action_high = self.model.actuator_ctrlrange.T.copy()
        if self.robot.forward_readout:
            torso = self.model.body("torso").id
            self.physics = ReadoutPhysics(self.model, self.num_envs, self.robot.frame_skip, torso, num_threads)
        else:
            self.physics = BatchedPhysics(self.model, self.num_envs, self.robot.frame_skip, num_threads)
        self._tasks = [dict(env_class.default_task) for _ in range(self.num_envs)]
        self._goals = np.full(self.num_envs, env_class.default_task[self.task_key])
        self._actions = np.zeros((self.num_envs, self.action_dim))
        self._x_before = np.zeros(self.num_envs)
        self.physics.initial_state(np.broadcast_to(self.model.qpos0, (self.num_envs, self.model.nq)), 0.0)

    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        return sample_tasks(self.task_space, n, seed)

    def set_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._tasks = validate_tasks(tasks, self.task_space, self.num_envs)
        self._goals[:] = [t[self.task_key] for t in self._tasks]

    def get_tasks(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self._tasks]

    def _forward(self) -> np.ndarray | None:
        return self.physics.forward if self.robot.forward_readout else None

    def _observations(self) -> np.ndarray:
        return self.readout.observation(self.physics.qpos, self.physics.qvel, self._forward())

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Noisy initial states for all envs (the same ``seed`` gives the same states); obs ``[num_envs, obs_dim]``."""
        qpos, qvel = reset_noise(self.robot, self.model, np.random.default_rng(seed), self.num_envs)
        return self.set_state(qpos, qvel)

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Start every env (time 0) from ``qpos [num_envs, nq]``, ``qvel [num_envs, nv]``; returns the observations."""
        self.physics.initial_state(qpos, qvel)
        return self._observations()

    def get_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``qpos [num_envs, nq]`` and ``qvel [num_envs, nv]``."""
        return self.physics.qpos.copy(), self.physics.qvel.copy()

    def step_physics(self, controls: np.ndarray) -> None:
        """Only the simulation: hold ``controls [num_envs, act_dim]`` (within bounds) for one env step.

        No clipping, observations or rewards: this is the raw batched physics rate.
        """
        self.physics.advance(controls)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """actions ``[num_envs, act_dim]`` (raw, clipped here) -> obs ``[N, obs_dim]``, rewards ``[N]``, terminated ``[N]``."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.action_dim}), got {actions.shape}")
        np.clip(actions, self.action_low, self.action_high, out=self._actions)
        self._x_before[:] = self.physics.qpos[:, 0]
        self.physics.advance(self._actions)
        return self.readout.step(self._goals, self._x_before, self.physics.qpos, self.physics.qvel, self._actions,
                                 self._forward())

    def close(self) -> None:
        self.physics.close()

    def __enter__(self) -> "BatchedLocomotion":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
