"""MuJoCo plumbing shared by the locomotion envs: models, warnings, the state layout, batched stepping.

``BatchedPhysics`` advances ``num_envs`` copies of one model by ``frame_skip``
physics steps per call with ``mujoco.rollout`` and a persistent pool of C
threads: one Python call per env step, no Python loop over envs.

``mujoco.rollout`` starts every call from a full physics state (time, qpos,
qvel, act) with the constraint solver's warmstart at zero, so each env step
starts the solver cold. The single env does the same (``step_cold``), which is
what makes the two forms bitwise equal; keeping the warmstart in one form only
changes trajectories after a few hundred steps because the dynamics are chaotic.

``ThreadedPhysics`` is the same batch for a robot that must also be read by a forward
pass after every step (rllab's ant observes contact forces, which ``mujoco.rollout`` does
not return): a Python loop per thread over its envs, same cold steps.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mujoco
import mujoco.rollout
import numpy as np

ASSETS = Path(__file__).parent / "assets"
FULL_PHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
CONTROL = mujoco.mjtState.mjSTATE_CTRL.value

_log = logging.getLogger("envs.mujoco")


def _log_mujoco_warning(message: str) -> None:
    _log.warning("MuJoCo: %s", message)


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to the ``envs.mujoco`` logger.

    Without a user handler MuJoCo appends them to ``MUJOCO_LOG.TXT`` in the
    current directory; a handler someone else installed is left in place.
    """
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_log_mujoco_warning)


@functools.cache
def load_model(xml_name: str) -> mujoco.MjModel:
    """The compiled model of ``envs/assets/<xml_name>`` (cached; treat it as read-only)."""
    route_mujoco_warnings()
    return mujoco.MjModel.from_xml_path(str(ASSETS / xml_name))


def step_cold(model: mujoco.MjModel, data: mujoco.MjData, control: np.ndarray, frame_skip: int) -> None:
    """Apply ``control [nu]`` for ``frame_skip`` physics steps, starting the solver cold like ``mujoco.rollout``."""
    data.ctrl[:] = control
    data.qacc_warmstart[:] = 0.0
    mujoco.mj_step(model, data, nstep=frame_skip)


class EnvStates:
    """The states of ``num_envs`` copies of ``model``, what both batched forms below step.

    ``state [num_envs, nstate]`` holds each env's full physics state (time,
    qpos, qvel, act); ``qpos [num_envs, nq]`` and ``qvel [num_envs, nv]`` are
    writable views into it.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, frame_skip: int, num_threads: int):
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 0:
            raise ValueError(f"num_threads must be a non-negative integer, got {num_threads!r}")
        self.model = model
        self.num_envs = num_envs
        self.frame_skip = frame_skip
        self.state = np.zeros((num_envs, mujoco.mj_stateSize(model, FULL_PHYSICS)))
        # FULLPHYSICS is laid out as [time, qpos, qvel, act, ...] (mj_getState's order).
        self.qpos = self.state[:, 1 : 1 + model.nq]
        self.qvel = self.state[:, 1 + model.nq : 1 + model.nq + model.nv]

    def initial_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set every env to time 0 with ``qpos [num_envs, nq]``, ``qvel [num_envs, nv]`` and no actuator state."""
        self.state[:] = 0.0
        self.qpos[:] = qpos
        self.qvel[:] = qvel


class BatchedPhysics(EnvStates):
    """``num_envs`` copies of ``model``; ``advance`` steps them all ``frame_skip`` times in C threads."""

    def __init__(self, model: mujoco.MjModel, num_envs: int, frame_skip: int, num_threads: int = 2):
        super().__init__(model, num_envs, frame_skip, num_threads)
        nstate = self.state.shape[1]
        self._controls = np.zeros((num_envs, frame_skip, model.nu))
        self._trajectory = np.zeros((num_envs, frame_skip, nstate))
        self._sensordata = np.zeros((num_envs, frame_skip, model.nsensordata))
        self._models = [model] * num_envs
        self._datas = [mujoco.MjData(model) for _ in range(max(1, num_threads))]
        self._pool: mujoco.rollout.Rollout | None = mujoco.rollout.Rollout(nthread=int(num_threads))

    def advance(self, controls: np.ndarray) -> None:
        """Hold ``controls [num_envs, nu]`` (within ctrlrange) for ``frame_skip`` physics steps, in place."""
        if self._pool is None:
            raise RuntimeError("this batched env is closed")
        self._controls[:] = controls[:, None, :]
        self._pool.rollout(
            self._models,
            self._datas,
            self.state,
            self._controls,
            control_spec=CONTROL,
            skip_checks=True,  # shapes and dtypes are fixed at construction
            nstep=self.frame_skip,
            state=self._trajectory,
            sensordata=self._sensordata,
        )
        self.state[:] = self._trajectory[:, -1]

    def close(self) -> None:
        """Stop the thread pool."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def forward_readout(model: mujoco.MjModel, data: mujoco.MjData, body: int, out: np.ndarray) -> None:
    """Recompute the forward pass at ``data``'s state and write what rllab's ant observes into ``out``.

    rllab called ``model.forward()`` after every step (controls still applied), on a MuJoCo (1.x)
    whose forward pass also filled the external contact forces; MuJoCo 4 fills them only on request
    (``mj_rnePostConstraint``). ``out [forward_size(model)]`` gets, in order: ``cfrc_ext`` of every
    body ``[nbody * 6]`` (torque then force, N m and N, at the centre of mass of the body's tree),
    then of ``body``: its rotation matrix ``xmat [9]`` (row-major), the centre of mass of its
    subtree ``[3]`` (m) and that centre's linear velocity ``[3]`` (m/s). The solver starts cold
    (see ``step_cold``).
    """
    data.qacc_warmstart[:] = 0.0
    mujoco.mj_forward(model, data)
    mujoco.mj_rnePostConstraint(model, data)
    mujoco.mj_subtreeVel(model, data)
    n = 6 * model.nbody
    out[:n] = data.cfrc_ext.ravel()
    out[n : n + 9] = data.xmat[body]
    out[n + 9 : n + 12] = data.subtree_com[body]
    out[n + 12 : n + 15] = data.subtree_linvel[body]


def forward_size(model: mujoco.MjModel) -> int:
    """Length of ``forward_readout``'s output: contact forces of every body, then 9 + 3 + 3 of one body."""
    return 6 * model.nbody + 15


class ThreadedPhysics(EnvStates):
    """``BatchedPhysics`` for models whose observation needs a forward pass after every step.

    ``mujoco.rollout`` returns states and sensor values only, not the contact forces that
    ``forward_readout`` reads, so here each env is stepped (``step_cold``) and read
    (``forward_readout``) by a Python loop, its slice of envs per thread; MuJoCo releases the GIL
    inside its calls, so two threads run about 1.5x the rate of one. ``forward [num_envs,
    forward_size]`` holds every env's readout after the latest ``initial_state`` / ``advance``.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, frame_skip: int, body: int, num_threads: int = 2):
        super().__init__(model, num_envs, frame_skip, num_threads)
        self.body = body
        self.forward = np.zeros((num_envs, forward_size(model)))
        workers = max(1, min(int(num_threads), num_envs))
        bounds = np.linspace(0, num_envs, workers + 1).astype(int)
        self._slices = [range(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._datas = [mujoco.MjData(model) for _ in self._slices]
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(workers) if num_threads > 0 else None
        self._closed = False

    def _run(self, envs: range, data: mujoco.MjData, controls: np.ndarray | None) -> None:
        for i in envs:
            mujoco.mj_setState(self.model, data, self.state[i], FULL_PHYSICS)
            if controls is None:  # a reset: rllab reads the new state with zero controls
                data.ctrl[:] = 0.0
            else:
                step_cold(self.model, data, controls[i], self.frame_skip)
                mujoco.mj_getState(self.model, data, self.state[i], FULL_PHYSICS)
            forward_readout(self.model, data, self.body, self.forward[i])

    def _all(self, controls: np.ndarray | None) -> None:
        if self._closed:
            raise RuntimeError("this batched env is closed")
        if self._pool is None:
            self._run(self._slices[0], self._datas[0], controls)
            return
        jobs = [self._pool.submit(self._run, envs, data, controls) for envs, data in zip(self._slices, self._datas)]
        for job in jobs:
            job.result()

    def initial_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set every env to time 0 with ``qpos [num_envs, nq]``, ``qvel [num_envs, nv]``, and read it."""
        super().initial_state(qpos, qvel)
        self._all(None)

    def advance(self, controls: np.ndarray) -> None:
        """Hold ``controls [num_envs, nu]`` (within ctrlrange) for ``frame_skip`` physics steps, then read, in place."""
        self._all(controls)

    def close(self) -> None:
        """Stop the threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._closed = True
