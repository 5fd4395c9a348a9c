"""Safety between the policy and the arm: input watchdog, emergency-stop latch, action checks and
velocity / acceleration / workspace limits. Pure Python + numpy (no ROS), so it is unit-tested alone.

A policy action is the project's 7-D step command (docs/design.md §3 "Actions"): Δposition xyz (m) and
Δrotation roll/pitch/yaw (rad) in the robot base frame per control period, and the gripper opening in
[0, 1]. :class:`CommandShaper` turns it into a Cartesian velocity (a twist: Δ / period), then clamps
speed, acceleration and the workspace. Anything wrong gives a hold (zero twist) and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ACTION_DIM = 7


@dataclass
class SafetyLimits:
    """Limits for one arm (the policy node reads them from its parameter file)."""

    max_linear_speed: float = 0.25
    """m/s, the norm of the linear velocity"""
    max_angular_speed: float = 1.0
    """rad/s, the norm of the angular velocity"""
    max_linear_accel: float = 2.0
    """m/s^2, change of the linear velocity between two commands"""
    max_angular_accel: float = 8.0
    """rad/s^2"""
    workspace_min: list[float] = field(default_factory=lambda: [0.2, -0.45, 0.0])
    """m, the lower corner of the box the end effector must stay in (robot base frame)"""
    workspace_max: list[float] = field(default_factory=lambda: [0.85, 0.45, 0.6])
    max_step: list[float] = field(default_factory=lambda: [0.05, 0.05, 0.05, 0.5, 0.5, 0.5, 1.0])
    """the largest |action| accepted per dimension (a bigger one is refused, not clipped)"""
    max_input_age: float = 0.5
    """s: images or joint states older than this hold the arm"""

    def validate(self) -> None:
        for name in ("max_linear_speed", "max_angular_speed", "max_linear_accel", "max_angular_accel",
                     "max_input_age"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (lo < hi).all():
            raise ValueError(
                f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}"
            )
        if len(self.max_step) != ACTION_DIM or min(self.max_step) <= 0:
            raise ValueError(f"max_step must be {ACTION_DIM} positive numbers, got {self.max_step}")


class Watchdog:
    """When each input was last fresh (an image: its stamp; the robot state: its arrival); the stale
    ones (never seen, expired, or older than the limit).

    An input found bad (malformed, non-finite, stamped too long ago) is expired at once rather than
    left to age out, so the arm holds at the next control tick, not ``limit`` seconds later."""

    def __init__(self, names: list[str], limit_s: float) -> None:
        self.limit = float(limit_s)
        self.last: dict[str, float | None] = dict.fromkeys(names)

    def feed(self, name: str, t: float) -> None:
        """``name`` arrived at time ``t`` (seconds, the node clock); older stamps never move it back."""
        prev = self.last.get(name)
        self.last[name] = t if prev is None else max(prev, t)

    def expire(self, name: str) -> None:
        """``name`` is stale from now until it is fed again."""
        self.last[name] = None

    def stale(self, now: float, horizon: float = 0.0) -> list[str]:
        """Inputs that hold the arm at time ``now``: those older than the limit by ``now + horizon``.

        The policy node passes one control period as ``horizon``: a command runs until the next tick,
        so it must not rest on an input that ages past the limit before then."""
        return [n for n, t in self.last.items() if t is None or now + horizon - t > self.limit]


class EStop:
    """Emergency-stop latch: once triggered it holds until an explicit reset."""

    def __init__(self) -> None:
        self.latched = False
        self.reason = ""

    def trigger(self, reason: str = "emergency stop") -> None:
        self.latched, self.reason = True, reason

    def reset(self) -> None:
        self.latched, self.reason = False, ""


def check_action(action, limits: SafetyLimits, steps: int = 1) -> str | None:
    """Why ``action`` must be dropped (wrong size, non-finite, beyond ``max_step``), or None.
    ``action`` may be the sum of ``steps`` policy actions (the motion limits scale with it, the
    gripper's does not)."""
    a = np.asarray(action, dtype=float)
    if a.shape != (ACTION_DIM,):
        return f"expected a {ACTION_DIM}-D action (dxyz, drpy, gripper), got shape {a.shape}"
    if not np.isfinite(a).all():
        return f"non-finite action {a.tolist()}"
    limit = np.asarray(limits.max_step, dtype=float) * np.r_[[steps] * 6, 1]
    if (np.abs(a) > limit).any() or not 0.0 <= a[6] <= 1.0:
        shown = np.round(limit, 4).tolist()
        return f"action {np.round(a, 4).tolist()} beyond the limits {shown} (gripper in [0, 1])"
    return None


@dataclass
class Command:
    """What goes to the arm: linear [3] (m/s) and angular [3] (rad/s) velocity, gripper in [0, 1]."""

    linear: np.ndarray
    angular: np.ndarray
    gripper: float
    hold: bool = False
    reason: str = ""


class CommandShaper:
    """Action -> safe velocity command at ``period`` seconds per control step (see module docstring)."""

    def __init__(self, limits: SafetyLimits, period: float) -> None:
        limits.validate()
        self.limits, self.period = limits, float(period)
        self.prev_linear, self.prev_angular = np.zeros(3), np.zeros(3)
        self.gripper = 1.0  # open until told otherwise

    def hold(self, reason: str) -> Command:
        """Zero velocity (the gripper keeps its last command)."""
        self.prev_linear, self.prev_angular = np.zeros(3), np.zeros(3)
        return Command(np.zeros(3), np.zeros(3), self.gripper, hold=True, reason=reason)

    def shape(self, action, ee_position=None, steps: int = 1) -> Command:
        """The command for one action, or the sum of ``steps`` policy actions executed in one period
        (``ee_position`` [3]: the end effector, for the workspace)."""
        why = check_action(action, self.limits, steps)
        if why:
            return self.hold(why)
        a = np.asarray(action, dtype=float)
        lim = self.limits
        linear = _clamp_norm(a[:3] / self.period, lim.max_linear_speed)
        angular = _clamp_norm(a[3:6] / self.period, lim.max_angular_speed)
        linear = self.prev_linear + _clamp_norm(linear - self.prev_linear, lim.max_linear_accel * self.period)
        angular = self.prev_angular + _clamp_norm(
            angular - self.prev_angular, lim.max_angular_accel * self.period
        )
        if ee_position is not None:
            linear = self._inside_workspace(np.asarray(ee_position, float), linear)
        self.prev_linear, self.prev_angular, self.gripper = linear, angular, float(a[6])
        return Command(linear, angular, self.gripper)

    def _inside_workspace(self, p: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Velocity components that would leave the box within one period are cut to reach its face."""
        lo, hi = np.asarray(self.limits.workspace_min), np.asarray(self.limits.workspace_max)
        nxt = p + v * self.period
        v = v.copy()
        up, down = nxt > hi, nxt < lo
        v[up] = np.maximum(0.0, (hi[up] - p[up]) / self.period)
        v[down] = np.minimum(0.0, (lo[down] - p[down]) / self.period)
        return v


def _clamp_norm(v: np.ndarray, max_norm: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= max_norm else v * (max_norm / n)
