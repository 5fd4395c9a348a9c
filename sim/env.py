"""The gymnasium environment: one task, a multi-view camera rig, Δ-EE or joint control.

Observation (a dict; V views, H x W pixels):
  rgb          uint8   [V, H, W, 3]
  depth        float32 [V, H, W]       (only with ``depth=True``; metres along the optical axis)
  seg          uint8   [V, H, W]       (only with ``seg=True``; 0 background, k + 1 the task's
                                        k-th object, names in ``env.seg_names``)
  state        float32 [15]            ee position (3), ee quaternion wxyz (4), gripper width (1), arm q (7)
  privileged   float32 [P]             task objects for scripted experts (layout: ``Task.privileged_spec``)
  K            float32 [V, 3, 3]       OpenCV intrinsics
  T_cam_world  float32 [V, 4, 4]       OpenCV world->camera extrinsics (the wrist camera moves)
Action: ``control="ee"`` [7] Δxyz (m), Δroll/pitch/yaw (rad), gripper in [0, 1] (1 = open);
``control="joint"`` [8] seven joint positions (rad) + gripper. Episodes terminate on success and
truncate at the task's ``max_steps``; the reward is 1.0 on success steps, else 0.0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gymnasium as gym
import mujoco
import numpy as np

from enerverse.core.camera import Camera
from sim.arm import ArmController
from sim.cameras import (
    AnchorSpec,
    MultiViewRenderer,
    RigSpec,
    camera_from_mujoco,
    mujoco_to_opencv,
    rig_cameras_xml,
)
from sim.rotations import mat_to_quat
from sim.scene import CONTROL_HZ, PHYSICS_DT, build_scene_xml, object_geom_labels
from sim.tasks import get_task_class
from sim.tasks.profile import task_profile

STATE_DIM = 15
EE_ACTION_DIM = 7
JOINT_ACTION_DIM = 8
MAX_DPOS = 0.05
MAX_DROT = 0.3
SETTLE_STEPS = 50


def anchor_from_dict(d: dict) -> AnchorSpec:
    """An AnchorSpec from a config dict, with the valid keys named on a bad one."""
    valid = [f.name for f in dataclasses.fields(AnchorSpec)]
    bad = [k for k in d if k not in valid]
    if bad:
        raise ValueError(f"unknown anchor key(s) {bad}; valid keys: {', '.join(valid)}")
    if d.get("name") in ("main", "wrist"):
        raise ValueError(f"anchor name {d['name']!r} is taken by a built-in camera; choose another name")
    return AnchorSpec(**d)


def profile_defaults(
    task: str,
    views: Sequence[str] | None,
    anchors: list[dict] | None,
    width: int | None,
    height: int | None,
    max_steps: int | None,
) -> tuple[Sequence[str] | None, int, int, int | None]:
    """Fill the constructor arguments left as None from the task's ``configs/task/`` profile (views
    only when no explicit anchors name them)."""
    p = task_profile(task)
    if views is None and anchors is None:
        views = p.views
    width = p.resolution if width is None else width
    height = p.resolution if height is None else height
    return views, width, height, max_steps if max_steps is not None else p.max_steps


def make_rig(
    views: Sequence[str] | None,
    anchors: list[dict] | None,
    width: int,
    height: int,
    max_steps: int | None,
    render_mode: str | None,
) -> RigSpec:
    """Check the constructor arguments every env shares; return the validated camera rig."""
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"resolution must be positive, got width={width} height={height}")
    if max_steps is not None and max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    rig = RigSpec() if anchors is None else RigSpec(anchors=[anchor_from_dict(a) for a in anchors])
    if views is not None:
        rig.views = tuple(views)
    elif anchors is not None:  # explicit anchors replace the rule-based ones in the default views
        rig.views = ("main", *(a.name for a in rig.anchors))
    rig.validate()
    return rig


def validate_action(action: np.ndarray, dim: int, control: str) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (dim,):
        raise ValueError(f"expected a {control} action of shape ({dim},), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {a.tolist()}")
    return a


class RigViews:
    """View names and kinds of an env with a ``rig`` (shared by the project's and Meta-World's envs)."""

    rig: RigSpec

    @property
    def view_names(self) -> list[str]:
        return list(self.rig.views)

    @property
    def view_kinds(self) -> list[str]:
        return [self.rig.kind(v) for v in self.rig.views]


class EnerVerseEnv(RigViews, gym.Env):
    """Tabletop manipulation with a 7-DoF arm and multi-view cameras (see module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}

    def __init__(
        self,
        task: str = "pick_place",
        views: Sequence[str] | None = None,
        width: int | None = None,
        height: int | None = None,
        depth: bool = False,
        control: str = "ee",
        max_steps: int | None = None,
        anchors: list[dict] | None = None,
        render_mode: str | None = None,
        seg: bool = False,
    ) -> None:
        task_cls = get_task_class(task)
        if control not in ("ee", "joint"):
            raise ValueError(f"control must be 'ee' or 'joint', got {control!r}")
        views, width, height, max_steps = profile_defaults(task, views, anchors, width, height, max_steps)
        rig = make_rig(views, anchors, width, height, max_steps, render_mode)
        self.rig, self.control, self.render_mode = rig, control, render_mode
        self.width, self.height, self.use_depth = int(width), int(height), bool(depth)
        self.use_seg = bool(seg)
        self.task = task_cls()
        self.max_steps = int(max_steps)
        self.fps = CONTROL_HZ
        self.n_substeps = int(round(1.0 / (CONTROL_HZ * PHYSICS_DT)))

        offscreen = (max(640, len(rig.views) * self.width), max(480, self.height))
        xml = build_scene_xml(task_cls.objects, rig_cameras_xml(rig), offscreen)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.arm = ArmController(self.model, self.data)
        self.task.bind(self.model, self.data, self.arm)
        self._base_rgba = self.model.geom_rgba.copy()
        labels = object_geom_labels(self.model, task_cls.objects) if self.use_seg else None
        self.renderer = MultiViewRenderer(
            self.model, list(rig.views), self.width, self.height, self.use_depth, labels
        )
        self._cam_ids = [self.model.camera(v).id for v in rig.views]
        self._fixed_T: dict[int, np.ndarray] | None = None  # filled after the first mj_forward
        self._static_K = np.stack([c.K for c in self.cameras()]).astype(np.float32)
        self._steps = 0

        V, H, W = len(rig.views), self.height, self.width
        spaces = {
            "rgb": gym.spaces.Box(0, 255, (V, H, W, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "privileged": gym.spaces.Box(-np.inf, np.inf, (task_cls.privileged_size(),), np.float32),
            "K": gym.spaces.Box(0.0, np.inf, (V, 3, 3), np.float32),
            "T_cam_world": gym.spaces.Box(-np.inf, np.inf, (V, 4, 4), np.float32),
        }
        if self.use_depth:
            spaces["depth"] = gym.spaces.Box(0.0, np.inf, (V, H, W), np.float32)
        if self.use_seg:
            spaces["seg"] = gym.spaces.Box(0, len(task_cls.objects), (V, H, W), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        if control == "ee":
            lo = np.array([-MAX_DPOS] * 3 + [-MAX_DROT] * 3 + [0.0], dtype=np.float32)
            self.action_space = gym.spaces.Box(lo, -lo + np.array([0] * 6 + [1], dtype=np.float32))
        else:
            lo = np.concatenate([self.arm.lo, [0.0]]).astype(np.float32)
            hi = np.concatenate([self.arm.hi, [1.0]]).astype(np.float32)
            self.action_space = gym.spaces.Box(lo, hi)

    # --- properties -----------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        """The language instruction of the current episode."""
        return self.task.instruction

    @property
    def seg_names(self) -> list[str]:
        """Object names of the ``seg`` labels: label k + 1 is ``seg_names[k]``."""
        return [o.name for o in self.task.objects]

    def cameras(self) -> list[Camera]:
        """The rig's cameras at their current poses (OpenCV convention)."""
        return [
            camera_from_mujoco(self.model, self.data, v, self.width, self.height, self.rig.kind(v))
            for v in self.rig.views
        ]

    # --- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.model.geom_rgba[:] = self._base_rgba
        self.arm.reset()
        self.task.randomize(self.np_random)
        mujoco.mj_forward(self.model, self.data)
        for _ in range(SETTLE_STEPS):  # let objects come to rest
            mujoco.mj_step(self.model, self.data)
        self.arm.sync_target()
        self._steps = 0
        return self._obs(), self._info(False)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self.control == "ee":
            a = validate_action(action, EE_ACTION_DIM, "ee")
        else:
            a = validate_action(action, JOINT_ACTION_DIM, "joint")
        a = np.clip(a, self.action_space.low, self.action_space.high)  # the action actually applied
        if self.control == "ee":
            self.arm.apply_delta_ee(a)
        else:
            self.arm.apply_joint(a)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        if self.control == "joint":
            self.arm.sync_target()
        self._steps += 1
        self.task.after_step(self._steps)
        success = self.task.success()
        truncated = self._steps >= self.max_steps and not success
        info = self._info(success)
        info["applied_action"] = a.astype(np.float32)
        return self._obs(), float(success), success, truncated, info

    def hold_action(self) -> np.ndarray:
        """The action that keeps the arm where it is (zero Δ-EE, or the current joint targets)."""
        g = self.arm.gripper_cmd
        if self.control == "ee":
            return np.array([0, 0, 0, 0, 0, 0, g], dtype=np.float32)
        return np.concatenate([self.arm.q_cmd, [g]]).astype(np.float32)

    def render(self) -> np.ndarray | None:
        """The views side by side, uint8 [H, V*W, 3] (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        rgb, _ = self.renderer.render(self.data)
        return np.concatenate(list(rgb), axis=1)

    def close(self) -> None:
        self.renderer.close()

    # --- internals ------------------------------------------------------------------------------
    def _state(self) -> np.ndarray:
        pos, rot = self.arm.ee_pose()
        return np.concatenate(
            [pos, mat_to_quat(rot), [self.arm.gripper_width()], self.data.qpos[self.arm.qadr]]
        ).astype(np.float32)

    def _extrinsics(self) -> np.ndarray:
        """T_cam_world [V, 4, 4]: world-fixed cameras are cached, moving ones (wrist) recomputed."""
        d = self.data
        if self._fixed_T is None:
            self._fixed_T = {
                i: mujoco_to_opencv(d.cam_xpos[c], d.cam_xmat[c]).astype(np.float32)
                for i, c in enumerate(self._cam_ids)
                if self.model.cam_bodyid[c] == 0
            }
        out = np.empty((len(self._cam_ids), 4, 4), dtype=np.float32)
        for i, c in enumerate(self._cam_ids):
            fixed = self._fixed_T.get(i)
            out[i] = fixed if fixed is not None else mujoco_to_opencv(d.cam_xpos[c], d.cam_xmat[c])
        return out

    def _obs(self) -> dict:
        rgb, depth = self.renderer.render(self.data)
        obs = {
            "rgb": rgb,
            "state": self._state(),
            "privileged": self.task.privileged(),
            "K": self._static_K.copy(),
            "T_cam_world": self._extrinsics(),
        }
        if depth is not None:
            obs["depth"] = depth
        if self.use_seg:
            obs["seg"] = self.renderer.render_segmentation(self.data)
        return obs

    def _info(self, success: bool) -> dict:
        return {
            "success": bool(success),
            "instruction": self.task.instruction,
            "task": self.task.name,
            "step": self._steps,
            **self.task.progress(),
        }
