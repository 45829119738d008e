"""MuJoCo plumbing shared by the locomotion envs: models, warnings, the state layout, batched stepping.

``BatchedPhysics`` advances ``num_envs`` copies of one model by ``frame_skip``
physics steps per call with ``mujoco.rollout`` and a persistent pool of C
threads: one Python call per env step, no Python loop over envs.

``mujoco.rollout`` starts every call from a full physics state (time, qpos,
qvel, act) with the constraint solver's warmstart at zero, so each env step
starts the solver cold. The single env does the same (``step_cold``), which is
what makes the two forms bitwise equal; keeping the warmstart in one form only
changes trajectories after a few hundred steps because the dynamics are chaotic.
"""

from __future__ import annotations

import functools
import logging
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


class BatchedPhysics:
    """``num_envs`` copies of ``model``; ``advance`` steps them all ``frame_skip`` times in C threads.

    ``state [num_envs, nstate]`` holds each env's full physics state (time,
    qpos, qvel, act); ``qpos [num_envs, nq]`` and ``qvel [num_envs, nv]`` are
    writable views into it.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, frame_skip: int, num_threads: int = 2):
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 0:
            raise ValueError(f"num_threads must be a non-negative integer, got {num_threads!r}")
        self.model = model
        self.num_envs = num_envs
        self.frame_skip = frame_skip
        nstate = mujoco.mj_stateSize(model, FULL_PHYSICS)
        self.state = np.zeros((num_envs, nstate))
        # FULLPHYSICS is laid out as [time, qpos, qvel, act, ...] (mj_getState's order).
        self.qpos = self.state[:, 1 : 1 + model.nq]
        self.qvel = self.state[:, 1 + model.nq : 1 + model.nq + model.nv]
        self._controls = np.zeros((num_envs, frame_skip, model.nu))
        self._trajectory = np.zeros((num_envs, frame_skip, nstate))
        self._sensordata = np.zeros((num_envs, frame_skip, model.nsensordata))
        self._models = [model] * num_envs
        self._datas = [mujoco.MjData(model) for _ in range(max(1, num_threads))]
        self._pool: mujoco.rollout.Rollout | None = mujoco.rollout.Rollout(nthread=int(num_threads))

    def initial_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set every env to time 0 with ``qpos [num_envs, nq]``, ``qvel [num_envs, nv]`` and no actuator state."""
        self.state[:] = 0.0
        self.qpos[:] = qpos
        self.qvel[:] = qvel

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
