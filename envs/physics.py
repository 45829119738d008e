"""MuJoCo plumbing shared by the locomotion envs: models, warnings, the state layout, batched stepping.

``BatchedPhysics`` advances ``num_envs`` copies of one model by ``frame_skip``
physics steps per call with ``mujoco.rollout`` and a persistent pool of C
threads: one Python call per env step, no Python loop over envs.

``mujoco.rollout`` starts every call from a full physics state (time, qpos,
qvel, act) with the constraint solver's warmstart at zero, so each env step
starts the solver cold. The single env does the same (``step_cold``), which is
what makes the two forms bitwise equal; keeping the warmstart in one form only
changes trajectories after a few hundred steps because the dynamics are chaotic.

``ReadoutPhysics`` is the same batch for a robot that must also be read by a forward
pass after every step (rllab's ant observes contact forces, which ``mujoco.rollout`` does
not return): a Python loop over the envs, split across worker processes, same cold steps.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import weakref
from pathlib import Path
from typing import BinaryIO

import mujoco
import mujoco.rollout
import numpy as np

ASSETS = Path(__file__).parent / "assets"
FULL_PHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS.value
CONTROL = mujoco.mjtState.mjSTATE_CTRL.value

_log = logging.getLogger("envs.mujoco")


_warned_kinds: set[str] = set()  # each kind of MuJoCo warning (its text without numbers) logged so far


def _log_mujoco_warning(message: str) -> None:
    # a diverged policy makes every env warn at every step (4,000 lines for one adaptation): one per kind
    kind = re.sub(r"\d+(\.\d*)?", "#", message)
    if kind not in _warned_kinds:
        _warned_kinds.add(kind)
        _log.warning("MuJoCo: %s (further warnings of this kind are not shown)", message)


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to the ``envs.mujoco`` logger, the first of each kind only.

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


def step_and_read(model: mujoco.MjModel, data: mujoco.MjData, body: int, frame_skip: int, state: np.ndarray,
               forward: np.ndarray, controls: np.ndarray | None) -> None:
    """Step a slice of envs by ``frame_skip`` cold steps each and read them (``forward_readout``), in place.

    ``state [n, nstate]`` rows are the envs' full physics states, ``forward [n, forward_size]`` their
    readouts, ``controls [n, nu]`` their controls; with ``controls`` None the envs are only read (a
    reset: rllab reads the new state with zero controls). ``data`` is scratch, shared by the slice.
    """
    for i in range(len(state)):
        mujoco.mj_setState(model, data, state[i], FULL_PHYSICS)
        if controls is None:
            data.ctrl[:] = 0.0
        else:
            step_cold(model, data, controls[i], frame_skip)
            mujoco.mj_getState(model, data, state[i], FULL_PHYSICS)
        forward_readout(model, data, body, forward[i])


class ReadoutPhysics(EnvStates):
    """``BatchedPhysics`` for models whose observation needs a forward pass after every step.

    ``mujoco.rollout`` returns states and sensor values only, not the contact forces that
    ``forward_readout`` reads, so each env is stepped and read by a Python loop (``step_and_read``).
    That loop holds the GIL between MuJoCo calls, so threads scale poorly (two ran 1.5x one);
    instead the envs are split into ``num_threads`` slices, the first run by this process and each
    other one by a worker process of its own (a fresh interpreter running this file with a copy of
    ``model``, fed controls and returning states and readouts through pipes; on 2 cores this process
    and one worker stepped 19,100 env steps per second where two threads stepped 15,400). The
    results do not depend on the split. ``forward [num_envs, forward_size]`` holds every env's
    readout after the latest ``initial_state`` / ``advance``.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, frame_skip: int, body: int, num_threads: int = 2):
        super().__init__(model, num_envs, frame_skip, num_threads)
        self.body = body
        self.forward = np.zeros((num_envs, forward_size(model)))
        bounds = np.linspace(0, num_envs, max(1, min(int(num_threads), num_envs)) + 1).astype(int)
        self._slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._data = mujoco.MjData(model)
        self._workers: list[_Worker] = []
        # ends the worker processes on close(), or if this object is dropped without it
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)
        try:
            self._workers.extend(_Worker(model, body, frame_skip, s.stop - s.start) for s in self._slices[1:])
        except BaseException:
            self.close()
            raise

    def _all(self, controls: np.ndarray | None) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("this batched env is closed")
        try:
            for worker, part in zip(self._workers, self._slices[1:]):
                worker.send(self.state[part] if controls is None else controls[part], reset=controls is None)
            own = self._slices[0]
            step_and_read(self.model, self._data, self.body, self.frame_skip, self.state[own], self.forward[own],
                       None if controls is None else controls[own])
            for worker, part in zip(self._workers, self._slices[1:]):
                worker.receive(self.state[part], self.forward[part])
        except BaseException:  # a worker may hold a half-sent reply: this batch cannot go on
            self.close()
            raise

    def initial_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Set every env to time 0 with ``qpos [num_envs, nq]``, ``qvel [num_envs, nv]``, and read it."""
        super().initial_state(qpos, qvel)
        self._all(None)

    def advance(self, controls: np.ndarray) -> None:
        """Hold ``controls [num_envs, nu]`` (within ctrlrange) for ``frame_skip`` physics steps, then read, in place."""
        self._all(np.ascontiguousarray(controls, dtype=np.float64))

    def close(self) -> None:
        """End the worker processes."""
        self._finalizer()


class _Worker:
    """One worker process of ``ReadoutPhysics`` and its pipes.

    Protocol (raw float64 arrays, both ways): first the pickled ``(model, body, frame_skip, n)``
    with its length; then per call one command byte, ``r`` + the slice's states (read them) or
    ``s`` + its controls (step, then read), answered by ``k`` + states + readouts, or ``e`` + the
    length and text of the error.
    """

    def __init__(self, model: mujoco.MjModel, body: int, frame_skip: int, n: int):
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        setup = pickle.dumps((model, body, frame_skip, n))
        self.process.stdin.write(len(setup).to_bytes(8, "little") + setup)
        self.process.stdin.flush()

    def lost(self) -> RuntimeError:
        return RuntimeError(f"physics worker {self.process.pid} ended unexpectedly (exit code {self.process.poll()})")

    def send(self, values: np.ndarray, reset: bool) -> None:
        try:
            self.process.stdin.write(b"r" if reset else b"s")
            self.process.stdin.write(np.ascontiguousarray(values, dtype=np.float64).data)
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self.lost() from None

    def receive(self, state: np.ndarray, forward: np.ndarray) -> None:
        status = self.process.stdout.read(1)
        if status == b"e":
            length = int.from_bytes(_read_exactly(self.process.stdout, 8), "little")
            raise RuntimeError(f"physics worker failed: {_read_exactly(self.process.stdout, length).decode()}")
        if status != b"k":
            raise self.lost()
        state[:] = np.frombuffer(_read_exactly(self.process.stdout, state.nbytes)).reshape(state.shape)
        forward[:] = np.frombuffer(_read_exactly(self.process.stdout, forward.nbytes)).reshape(forward.shape)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise RuntimeError("physics worker pipe ended unexpectedly")
    return data


def _stop_workers(workers: list[_Worker]) -> None:
    for worker in workers:  # closing stdin ends the worker's loop
        for stream in (worker.process.stdin, worker.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
    for worker in workers:
        try:
            worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _serve() -> None:
    """A ``ReadoutPhysics`` worker: read commands on stdin, answer on stdout, until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our stdin
    route_mujoco_warnings()
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed (by C code too) goes to stderr, not into the replies
    header = stdin.read(8)
    if len(header) != 8:
        return
    model, body, frame_skip, n = pickle.loads(_read_exactly(stdin, int.from_bytes(header, "little")))
    data = mujoco.MjData(model)
    state = np.zeros((n, mujoco.mj_stateSize(model, FULL_PHYSICS)))
    forward = np.zeros((n, forward_size(model)))
    controls = np.zeros((n, model.nu))
    try:
        while command := stdin.read(1):
            target = state if command == b"r" else controls
            target[:] = np.frombuffer(_read_exactly(stdin, target.nbytes)).reshape(target.shape)
            try:
                step_and_read(model, data, body, frame_skip, state, forward, None if command == b"r" else controls)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                message = f"{type(exc).__name__}: {exc}".encode()
                stdout.write(b"e" + len(message).to_bytes(8, "little") + message)
            else:
                stdout.write(b"k" + state.data + forward.data)
            stdout.flush()
    except (BrokenPipeError, RuntimeError):  # the parent went away mid-call
        pass


if __name__ == "__main__":  # run by ReadoutPhysics as a worker process
    _serve()
