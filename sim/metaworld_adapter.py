"""Meta-World v3 tasks behind the :class:`sim.env.EnerVerseEnv` interface (``make_env("metaworld/<name>")``).

Observation (a dict; V views, H x W pixels), laid out exactly like ``EnerVerseEnv``:
  rgb          uint8   [V, H, W, 3]
  depth        float32 [V, H, W]   (only with ``depth=True``; metres along the optical axis)
  state        float32 [4]         hand position xyz (m, Meta-World world frame) + gripper opening in
                                   [0, 1] (finger distance / 0.1 m, 1 = open); ``obs39[:4]``
  privileged   float32 [39]        Meta-World's own fully observable observation (goal included), for
                                   its scripted policies
  K            float32 [V, 3, 3]   OpenCV intrinsics
  T_cam_world  float32 [V, 4, 4]   OpenCV world->camera extrinsics
Action [7]: Δxyz (m, world frame = Sawyer base axes), Δroll/pitch/yaw (ignored, must be finite), gripper
in [0, 1] (1 = open). It becomes Meta-World's [4] action: ``clip(Δxyz / action_scale, -1, 1)`` and
gripper effort ``1 - 2 g`` (-1 open .. +1 close). The reward is 1.0 on success steps (Meta-World's
shaped reward is ``info["dense_reward"]``); episodes terminate on success and truncate at ``max_steps``.

Views ``main`` (front-right of the table looking back at the robot, :data:`MW_MAIN_EYE` ->
:data:`MW_MAIN_TARGET`) and the anchors (default: main rotated ±30° about z through
:data:`MW_WORKSPACE_CENTER`) are free MuJoCo cameras (lookat/distance/azimuth/elevation, always upright)
placed from OpenCV poses; they use ``model.vis.global_.fovy``, set per view to the view's fovy (50° by
default, as in the project's rig). ``wrist`` is Meta-World's hand-mounted ``gripperPOV`` camera.
Episode ``seed`` k uses goal ``k % 50`` of ``metaworld.MT1(task, seed=k // 50).train_tasks``.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from enerverse.core.camera import Camera, intrinsics_from_fovy, invert_se3, look_at, rotate_about_z
from sim.cameras import MAIN_FOVY, mujoco_to_opencv
from sim.env import EE_ACTION_DIM, MAX_DROT, RigViews, make_rig, profile_defaults, validate_action

MW_MAIN_EYE = np.array([0.8, 1.3, 0.75])  # front-right of the table, looking back at the robot
MW_MAIN_TARGET = np.array([0.0, 0.62, 0.15])
MW_WORKSPACE_CENTER = np.array([0.0, 0.65, 0.1])  # pivot of the anchor rule
MW_WRIST_CAMERA = "gripperPOV"
N_GOALS = 50  # goals per MT1 benchmark (metaworld._N_GOALS)
STATE_DIM = 4
PRIVILEGED_DIM = 39


def _metaworld() -> Any:
    try:
        import metaworld
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("Meta-World is not installed: pip install -e .[metaworld]") from e
    return metaworld


def metaworld_task_names() -> list[str]:
    """Every Meta-World v3 task name (e.g. ``pick-place-v3``)."""
    return sorted(_metaworld().env_dict.ALL_V3_ENVIRONMENTS)


def check_task_name(name: str) -> str:
    """Return ``name`` if it is a Meta-World v3 task, else raise ValueError with a suggestion."""
    valid = metaworld_task_names()
    if name in valid:
        return name
    close = difflib.get_close_matches(name, valid, n=1) or difflib.get_close_matches(name + "-v3", valid, n=1)
    hint = f" did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown Meta-World task {name!r};{hint} valid tasks: {', '.join(valid)}")


def task_instruction(name: str) -> str:
    """A sentence made from the task name: ``pick-place-v3`` -> ``pick place``."""
    return name.removesuffix("-v3").replace("-", " ")


@functools.lru_cache(maxsize=4)
def _train_tasks(name: str, block: int) -> tuple:
    """``metaworld.MT1(name, seed=block).train_tasks`` (50 goals; ~1.3 s to build, so cached)."""
    return tuple(_metaworld().MT1(name, seed=block).train_tasks)


def free_camera_from_opencv(T_cam_world: np.ndarray) -> mujoco.MjvCamera:
    """An ``mjvCamera`` of type free that renders exactly the OpenCV pose ``T_cam_world`` [4,4].

    Free cameras cannot roll: the image x axis must be horizontal and image "down" must point down.
    """
    T_wc = invert_se3(T_cam_world)
    x, y, fwd, eye = T_wc[:3, 0], T_wc[:3, 1], T_wc[:3, 2], T_wc[:3, 3]
    if abs(x[2]) > 1e-6 or y[2] >= 0.0:
        raise ValueError("a free MuJoCo camera must be upright (no roll): use a look_at pose with up = +z")
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.azimuth = float(np.degrees(np.arctan2(fwd[1], fwd[0])))
    cam.elevation = float(np.degrees(np.arcsin(np.clip(fwd[2], -1.0, 1.0))))
    cam.distance = 1.0
    cam.lookat[:] = eye + fwd  # MuJoCo places the eye at lookat - distance * forward
    return cam


RIG_VERSION = "metaworld-1"
"""Version of the adapter's camera rig (stores and checkpoints record it, see sim.settings.rig_version);
a string, so it never equals one of the tabletop's integer versions."""


class MetaWorldEnv(RigViews, gym.Env):
    """A Meta-World v3 task with the EnerVerse observation/action layout (see module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task_name: str = "pick-place-v3",
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
        if seg:
            raise ValueError(
                "seg=True: object masks are rendered for the project's tasks only, not Meta-World"
            )
        mw = _metaworld()
        self.task_name = check_task_name(task_name)
        if control != "ee":
            raise ValueError(f"Meta-World supports only control='ee', got {control!r}")
        views, width, height, max_steps = profile_defaults(
            f"metaworld/{self.task_name}", views, anchors, width, height, max_steps
        )
        rig = make_rig(views, anchors, width, height, max_steps, render_mode)
        self.rig, self.control, self.render_mode = rig, control, render_mode
        self.width, self.height, self.use_depth = int(width), int(height), bool(depth)

        self._mw = mw.env_dict.ALL_V3_ENVIRONMENTS[self.task_name]()
        self.max_steps = int(max_steps or self._mw.max_path_length)
        self._mw.max_path_length = self.max_steps  # Meta-World refuses to step past its own horizon
        self.action_scale = float(self._mw.action_scale)
        self.fps = 1.0 / (self._mw.frame_skip * self._mw.model.opt.timestep)
        self.model, self.data = self._mw.model, self._mw.data
        q = self.model.vis.quality  # the project's render quality: ~2x faster on software GL
        q.shadowsize, q.offsamples, q.numslices, q.numstacks, q.numquads = 0, 0, 12, 6, 1
        g = self.model.vis.global_
        g.offwidth, g.offheight = max(g.offwidth, self.width), max(g.offheight, self.height)
        self._renderer: mujoco.Renderer | None = None  # GL is created lazily (after any fork)

        anchors_by_name = {a.name: a for a in rig.anchors}
        main_T = look_at(MW_MAIN_EYE, MW_MAIN_TARGET)
        self._views: list[tuple[str, mujoco.MjvCamera, float, np.ndarray | None]] = []
        for v in rig.views:  # (name, camera, fovy, static T_cam_world or None if it moves)
            if v == "wrist":
                cam = mujoco.MjvCamera()
                cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
                cam.fixedcamid = self.model.camera(MW_WRIST_CAMERA).id
                self._views.append((v, cam, float(self.model.cam_fovy[cam.fixedcamid]), None))
                continue
            a = anchors_by_name.get(v)
            if a is None:
                T, fovy = main_T, MAIN_FOVY
            elif a.yaw_deg is not None:
                T, fovy = rotate_about_z(main_T, a.yaw_deg, MW_WORKSPACE_CENTER), a.fovy
            else:
                up = np.asarray(a.up or (0.0, 0.0, 1.0), float)
                T, fovy = look_at(np.asarray(a.eye, float), np.asarray(a.target, float), up), a.fovy
            self._views.append((v, free_camera_from_opencv(T), float(fovy), T))
        self._K = np.stack([intrinsics_from_fovy(f, self.width, self.height) for _, _, f, _ in self._views])
        self._steps = 0
        self._episode = 0

        V, H, W = len(self._views), self.height, self.width
        spaces = {
            "rgb": gym.spaces.Box(0, 255, (V, H, W, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "privileged": gym.spaces.Box(-np.inf, np.inf, (PRIVILEGED_DIM,), np.float32),
            "K": gym.spaces.Box(0.0, np.inf, (V, 3, 3), np.float32),
            "T_cam_world": gym.spaces.Box(-np.inf, np.inf, (V, 4, 4), np.float32),
        }
        if self.use_depth:
            spaces["depth"] = gym.spaces.Box(0.0, np.inf, (V, H, W), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        s = self.action_scale
        lo = np.array([-s] * 3 + [-MAX_DROT] * 3 + [0.0], dtype=np.float32)
        self.action_space = gym.spaces.Box(lo, -lo + np.array([0] * 6 + [1], dtype=np.float32))

    # --- properties -----------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        """The language instruction (from the task name, e.g. ``pick place``)."""
        return task_instruction(self.task_name)

    def cameras(self) -> list[Camera]:
        """The rig's cameras at their current poses (OpenCV convention)."""
        return [
            Camera(v, K, T, self.width, self.height, self.rig.kind(v))
            for v, K, T in zip(self.rig.views, self._K, self._extrinsics())
        ]

    # --- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Episode ``seed`` k: goal ``k % 50`` of ``MT1(task, seed=k // 50)``; no seed draws k in [0, 50)."""
        super().reset(seed=seed)
        self._last_grip = 1.0
        k = int(seed) if seed is not None else int(self.np_random.integers(N_GOALS))
        if k < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self._mw.set_task(_train_tasks(self.task_name, k // N_GOALS)[k % N_GOALS])
        self._obs39, _ = self._mw.reset()
        self._episode, self._steps = k, 0
        return self._obs(), self._info(False, 0.0)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = validate_action(action, EE_ACTION_DIM, "ee")
        a = np.clip(a, self.action_space.low, self.action_space.high)  # what Meta-World can execute
        self._obs39, dense, _, _, mw_info = self._mw.step(to_metaworld_action(a, self.action_scale))
        self._steps += 1
        success = bool(mw_info["success"])
        truncated = self._steps >= self.max_steps and not success
        info = self._info(success, float(dense))
        info["applied_action"] = a.astype(np.float32)
        self._last_grip = float(a[6])
        return self._obs(), float(success), success, truncated, info

    def hold_action(self) -> np.ndarray:
        """Zero motion with the gripper as last commanded (the final frame of a recorded episode)."""
        return np.array([0, 0, 0, 0, 0, 0, self._last_grip], dtype=np.float32)

    def render(self) -> np.ndarray | None:
        """The views side by side, uint8 [H, V*W, 3] (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        rgb, _ = self._render()
        return np.concatenate(list(rgb), axis=1)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._mw.close()

    # --- internals ------------------------------------------------------------------------------
    def _render(self) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB uint8 [V, H, W, 3] and z-depth float32 [V, H, W] (m) or None, one Renderer for all views."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        r, g = self._renderer, self.model.vis.global_
        V, H, W = len(self._views), self.height, self.width
        rgb = np.empty((V, H, W, 3), np.uint8)
        depth = np.empty((V, H, W), np.float32) if self.use_depth else None
        fovy0 = g.fovy
        try:
            for i, (_, cam, fovy, _) in enumerate(self._views):
                g.fovy = fovy  # free cameras use the model's global fovy (read by update_scene)
                r.update_scene(self.data, camera=cam)
                r.render(out=rgb[i])
                if depth is not None:
                    r.enable_depth_rendering()
                    depth[i] = r.render()
                    r.disable_depth_rendering()
        finally:
            g.fovy = fovy0
        return rgb, depth

    def _extrinsics(self) -> np.ndarray:
        """T_cam_world [V, 4, 4] (float64): static poses for free cameras, live pose for the wrist."""
        out = []
        for _, cam, _, T in self._views:
            if T is None:
                c = cam.fixedcamid
                T = mujoco_to_opencv(self.data.cam_xpos[c], self.data.cam_xmat[c])
            out.append(T)
        return np.stack(out)

    def _obs(self) -> dict:
        rgb, depth = self._render()
        o = np.asarray(self._obs39, dtype=np.float32)
        obs = {
            "rgb": rgb,
            "state": o[:STATE_DIM].copy(),
            "privileged": o.copy(),
            "K": self._K.astype(np.float32),
            "T_cam_world": self._extrinsics().astype(np.float32),
        }
        if depth is not None:
            obs["depth"] = depth
        return obs

    def _info(self, success: bool, dense_reward: float) -> dict:
        return {
            "success": bool(success),
            "instruction": self.instruction,
            "task": f"metaworld/{self.task_name}",
            "step": self._steps,
            "seed": self._episode,
            "dense_reward": dense_reward,
        }


def to_metaworld_action(action: np.ndarray, action_scale: float) -> np.ndarray:
    """Our 7-D Δ-EE action [7] -> Meta-World's [4]: Δxyz / action_scale in [-1, 1], effort 1 - 2 g."""
    a = np.asarray(action, dtype=np.float64)
    xyz = np.clip(a[:3] / action_scale, -1.0, 1.0)
    return np.concatenate([xyz, [1.0 - 2.0 * np.clip(a[6], 0.0, 1.0)]]).astype(np.float32)


def from_metaworld_action(mw_action: np.ndarray, action_scale: float) -> np.ndarray:
    """Meta-World's [4] action -> our 7-D Δ-EE action [7] (rotation 0, g = (1 - effort) / 2)."""
    a = np.asarray(mw_action, dtype=np.float64)
    g = np.clip((1.0 - a[3]) / 2.0, 0.0, 1.0)
    return np.concatenate([np.clip(a[:3], -1.0, 1.0) * action_scale, np.zeros(3), [g]]).astype(np.float32)


class MetaWorldExpert:
    """Batched policy (``reset()``, ``act(obs) -> [B, 1, 7]``) running Meta-World's scripted policy.

    The policy reads ``obs["privileged"]`` [B, 39]; its actions (Δxyz clipped to [-1, 1], as the
    environment would) are mapped back to our 7-D convention with :func:`from_metaworld_action`.
    """

    def __init__(self, task_name: str = "pick-place-v3", action_scale: float | None = None) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        self.task_name = check_task_name(task_name)
        if self.task_name not in ENV_POLICY_MAP:
            raise ValueError(f"Meta-World has no scripted policy for {self.task_name!r}")
        self.policy = ENV_POLICY_MAP[self.task_name]()
        # Meta-World sets action_scale = 1/100 in SawyerXYZEnv.__init__ (an instance attribute, so it
        # cannot be read without building an env); MetaWorldEnv.action_scale reads the live value
        self.action_scale = float(1.0 / 100 if action_scale is None else action_scale)
        self.chunk = 1

    def reset(self, instructions: list[str] | None = None) -> None:
        """Meta-World's scripted policies are stateless; nothing to forget."""

    def act(self, obs: dict) -> np.ndarray:
        """Actions [B, 1, 7] for a batched observation dict (``privileged`` [B, 39])."""
        priv = np.asarray(obs["privileged"], dtype=np.float64)
        out = np.empty((len(priv), 1, EE_ACTION_DIM), dtype=np.float32)
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip, as the env does
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            for b, o in enumerate(priv):
                out[b, 0] = from_metaworld_action(self.policy.get_action(o), self.action_scale)
        return out
