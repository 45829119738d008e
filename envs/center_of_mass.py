"""Whole-body centre of mass of a planar robot (the cheetah), position and velocity, for many states at once.

rllab's cheetah (the MAML paper's) observes the robot's centre of mass and rewards its
forward velocity: MuJoCo's ``subtree_com`` and ``subtree_linvel`` of the torso, the root of
every moving body. MuJoCo computes them for one ``MjData`` at a time; the batched sampler
needs them for hundreds of states per step, so they are computed here from ``qpos`` and
``qvel`` by the planar forward kinematics of the model's body tree (equal to MuJoCo's to
rounding, tested).

Planar means: the root body moves on slide joints along world x and z followed by a
hinge about y; every other body hangs on one hinge about y at its origin; no body frame is
rotated and every body origin and centre of mass lies in the x-z plane. A model that is not
of that form is refused at construction.
"""

from __future__ import annotations

import mujoco
import numpy as np


class PlanarCenterOfMass:
    """``com(qpos [N, nq], qvel [N, nv]) -> (position [N, 3] m, velocity [N, 3] m/s)`` of the whole robot."""

    def __init__(self, model: mujoco.MjModel):
        self.parents: list[int] = []  # per moving body (index into these lists), -1 for the root
        self.offsets: list[np.ndarray] = []  # body origin in its parent's frame (x, z)
        self.inertial: list[np.ndarray] = []  # centre of mass in the body's frame (x, z)
        self.hinges: list[tuple[int, int]] = []  # (qpos address, dof address) of the body's y hinge
        masses = []
        index = {}  # MuJoCo body id -> position in these lists
        self.slides: dict[str, tuple[int, int]] = {}
        for body in range(1, model.nbody):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body)
            if not np.allclose(model.body_quat[body], [1, 0, 0, 0]):
                raise ValueError(f"body {name!r}: a rotated body frame is not planar")
            if abs(model.body_pos[body, 1]) > 1e-12 or abs(model.body_ipos[body, 1]) > 1e-12:
                raise ValueError(f"body {name!r} is off the x-z plane")
            parent = int(model.body_parentid[body])
            joints = range(model.body_jntadr[body], model.body_jntadr[body] + model.body_jntnum[body])
            kinds = [self._joint_kind(model, j) for j in joints]
            if parent == 0:
                if kinds != ["slide_x", "slide_z", "hinge_y"] or self.parents:
                    raise ValueError(f"body {name!r}: the one root body needs slide x, slide z, hinge y joints")
                for kind, j in zip(kinds[:2], joints):
                    self.slides[kind] = (int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j]))
            elif kinds != ["hinge_y"]:
                raise ValueError(f"body {name!r}: every non-root body needs exactly one hinge about y")
            hinge = joints[-1]
            if not np.allclose(model.jnt_pos[hinge], 0.0):
                raise ValueError(f"body {name!r}: its hinge must sit at the body origin")
            index[body] = len(self.parents)
            self.parents.append(-1 if parent == 0 else index[parent])
            self.offsets.append(model.body_pos[body, [0, 2]].copy())
            self.inertial.append(model.body_ipos[body, [0, 2]].copy())
            self.hinges.append((int(model.jnt_qposadr[hinge]), int(model.jnt_dofadr[hinge])))
            masses.append(model.body_mass[body])
        self.masses = np.array(masses)
        self.total_mass = float(self.masses.sum())

    @staticmethod
    def _joint_kind(model: mujoco.MjModel, joint: int) -> str:
        axis = model.jnt_axis[joint]
        kind = model.jnt_type[joint]
        if kind == mujoco.mjtJoint.mjJNT_SLIDE and np.allclose(axis, [1, 0, 0]):
            return "slide_x"
        if kind == mujoco.mjtJoint.mjJNT_SLIDE and np.allclose(axis, [0, 0, 1]):
            return "slide_z"
        if kind == mujoco.mjtJoint.mjJNT_HINGE and np.allclose(axis, [0, 1, 0]):
            return "hinge_y"
        raise ValueError(f"joint {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, joint)!r} is not planar")

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = qpos.shape[0]
        # world frame of each body: origin (x, z), angle about y, and their rates
        origin, origin_rate, angle, angle_rate = [], [], [], []
        com = np.zeros((n, 2))
        com_rate = np.zeros((n, 2))
        (qx, vx), (qz, vz) = self.slides["slide_x"], self.slides["slide_z"]
        for b, parent in enumerate(self.parents):
            if parent < 0:
                o = np.stack((self.offsets[b][0] + qpos[:, qx], self.offsets[b][1] + qpos[:, qz]), axis=1)
                o_rate = np.stack((qvel[:, vx], qvel[:, vz]), axis=1)
                a, a_rate = qpos[:, self.hinges[b][0]], qvel[:, self.hinges[b][1]]
            else:
                r = _rotate(angle[parent], self.offsets[b])
                o = origin[parent] + r
                o_rate = origin_rate[parent] + _cross(angle_rate[parent], r)
                a = angle[parent] + qpos[:, self.hinges[b][0]]
                a_rate = angle_rate[parent] + qvel[:, self.hinges[b][1]]
            origin.append(o)
            origin_rate.append(o_rate)
            angle.append(a)
            angle_rate.append(a_rate)
            r = _rotate(a, self.inertial[b])
            com += self.masses[b] * (o + r)
            com_rate += self.masses[b] * (o_rate + _cross(a_rate, r))
        zeros = np.zeros((n, 1))
        position = np.concatenate((com[:, :1], zeros, com[:, 1:]), axis=1) / self.total_mass
        velocity = np.concatenate((com_rate[:, :1], zeros, com_rate[:, 1:]), axis=1) / self.total_mass
        return position, velocity


def _rotate(angle: np.ndarray, local: np.ndarray) -> np.ndarray:
    """A body-frame vector (x, z) [2] in the world, the frame turned by ``angle`` [N] about +y -> [N, 2]."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack((c * local[0] + s * local[1], -s * local[0] + c * local[1]), axis=1)


def _cross(rate: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Velocity (x, z) [N, 2] of a point at world offset ``r`` [N, 2] turning at ``rate`` [N] rad/s about +y."""
    return np.stack((rate * r[:, 1], -rate * r[:, 0]), axis=1)
