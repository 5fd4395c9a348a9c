"""MJCF tabletop scene written by the project: a 7-DoF arm with a parallel gripper, a table, task
objects and cameras.

The arm follows the kinematic parameters of a Franka-Panda-class arm (link offsets 0.333, 0.316,
0.0825, 0.384, 0.088, flange 0.107 m) drawn with simple capsules. The world frame is the robot base
frame: the base sits at the origin on the table top (z = 0), the workspace lies in front (+x).
Objects are declared by tasks as :class:`ObjectSpec` and added to the model here, so each task's
model only contains what it uses; poses and colours are randomised at reset without recompiling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
HOME_QPOS = np.array([0.0, -0.35, 0.0, -2.45, 0.0, 2.1, 0.0])
FINGER_OPEN = 0.04  # m per finger: 8 cm total opening
WORKSPACE_CENTER = np.array([0.5, 0.0, 0.0])
CUBE_HALF = 0.025
CONTROL_HZ = 20.0
PHYSICS_DT = 0.002

_JOINT_RANGES = [
    (-2.8973, 2.8973),
    (-1.7628, 1.7628),
    (-2.8973, 2.8973),
    (-3.0718, -0.0698),
    (-2.8973, 2.8973),
    (-0.0175, 3.7525),
    (-2.8973, 2.8973),
]
# (body pos in parent, joint axis, capsule from-to in body frame, radius)
_LINKS = [
    ((0, 0, 0.333), (0, 0, 1), (0, 0, -0.25, 0, 0, -0.02), 0.06),
    ((0, 0, 0), (0, 1, 0), (0, 0, 0.0, 0, 0, 0.22), 0.055),
    ((0, 0, 0.316), (0, 0, 1), (0, 0, -0.08, 0.0825, 0, 0), 0.05),
    ((0.0825, 0, 0), (0, -1, 0), (0, 0, 0, -0.0825, 0, 0.18), 0.05),
    ((-0.0825, 0, 0.384), (0, 0, 1), (0, 0, -0.2, 0, 0, -0.02), 0.045),
    ((0, 0, 0), (0, -1, 0), (0, 0, 0, 0.088, 0, 0), 0.04),
]


@dataclass(frozen=True)
class ObjectSpec:
    """An object a task needs. kind: cube | pad | marker | lamp | bin."""

    name: str
    kind: str
    size: float = CUBE_HALF


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.ravel(v))


def _arm_xml() -> str:
    parts = [
        '<body name="link0" pos="0 0 0">',
        '<geom type="cylinder" size="0.08 0.05" pos="0 0 0.05" material="arm_dark"/>',
    ]
    for i, (pos, axis, fromto, radius) in enumerate(_LINKS):
        lo, hi = _JOINT_RANGES[i]
        mat = "arm_light" if i % 2 == 0 else "arm_dark"
        parts.append(f'<body name="link{i + 1}" pos="{_fmt(pos)}" gravcomp="1">')
        parts.append(
            f'<joint name="{ARM_JOINTS[i]}" axis="{_fmt(axis)}" range="{lo} {hi}" '
            'damping="5" armature="0.1"/>'
        )
        parts.append(
            f'<geom type="capsule" fromto="{_fmt(fromto)}" size="{radius}" material="{mat}" '
            'mass="1.0" contype="0" conaffinity="0"/>'
        )
    lo, hi = _JOINT_RANGES[6]
    # link7's z axis points down at the zero posture; the hand hangs below it.
    parts += [
        '<body name="link7" pos="0.088 0 0" quat="0 1 0 0" gravcomp="1">',
        f'<joint name="joint7" axis="0 0 1" range="{lo} {hi}" damping="2" armature="0.05"/>',
        '<geom type="cylinder" size="0.045 0.03" pos="0 0 0.06" material="arm_light" mass="0.5" '
        'contype="0" conaffinity="0"/>',
        '<body name="hand" pos="0 0 0.107" gravcomp="1">',
        '<geom type="box" size="0.025 0.095 0.025" pos="0 0 0.03" material="arm_dark" mass="0.5"/>',
        '<site name="ee" pos="0 0 0.1034" size="0.005" rgba="1 0 0 0"/>',
        '<camera name="wrist" pos="-0.08 0 0.02" xyaxes="0 1 0 0.96 0 -0.28" fovy="75"/>',
    ]
    for side, sign in (("left", 1), ("right", -1)):
        parts += [
            f'<body name="finger_{side}_body" pos="0 0 0.0584" gravcomp="1">',
            f'<joint name="finger_{side}" type="slide" axis="0 {sign} 0" range="0 {FINGER_OPEN}" '
            'damping="2" armature="0.01"/>',
            f'<geom type="box" size="0.01 0.006 0.025" pos="0 {sign * 0.008} 0.02" material="finger" '
            'mass="0.05"/>',
            f'<geom name="pad_{side}" type="box" size="0.009 0.003 0.012" pos="0 {sign * 0.0015} 0.042" '
            'material="finger" friction="1.5 0.02 0.001" condim="4" mass="0.01"/>',
            "</body>",
        ]
    parts += ["</body>"] * (2 + len(_LINKS) + 1)  # hand, link7, link6..link1, link0
    return "\n".join(parts)


def _object_xml(spec: ObjectSpec) -> str:
    n, s = spec.name, spec.size
    if spec.kind == "cube":
        return (
            f'<body name="{n}" pos="0.5 0 {s}"><freejoint name="{n}_joint"/>'
            f'<geom name="{n}_geom" type="box" size="{s} {s} {s}" rgba="1 0 0 1" mass="0.08" '
            'friction="1.2 0.01 0.001" condim="4"/></body>'
        )
    if spec.kind == "pad":  # flat target region, visual only
        return (
            f'<body name="{n}" mocap="true" pos="0.5 0 0.001"><geom name="{n}_geom" type="cylinder" '
            f'size="{s} 0.001" rgba="0 1 0 1" contype="0" conaffinity="0"/></body>'
        )
    if spec.kind == "marker":  # floating goal sphere, visual only
        return (
            f'<body name="{n}" mocap="true" pos="0.5 0 0.2"><geom name="{n}_geom" type="sphere" '
            f'size="{s}" rgba="0 1 0 0.6" contype="0" conaffinity="0"/></body>'
        )
    if spec.kind == "lamp":  # cue light on a post
        return (
            f'<body name="{n}" mocap="true" pos="0.75 0.3 0"><geom type="cylinder" size="0.01 0.05" '
            f'pos="0 0 0.05" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>'
            f'<geom name="{n}_geom" type="sphere" size="{s}" pos="0 0 0.11" rgba="1 1 1 1" '
            'contype="0" conaffinity="0"/></body>'
        )
    if spec.kind == "bin":  # open box (inner half-width s) with a sliding lid along +y
        w, h, t = s, 0.055, 0.006
        walls = [
            ((w + t, 0, h / 2), (t, w + 2 * t, h / 2)),
            ((-w - t, 0, h / 2), (t, w + 2 * t, h / 2)),
            ((0, w + t, h / 2), (w, t, h / 2)),
            ((0, -w - t, h / 2), (w, t, h / 2)),
        ]
        geoms = "".join(
            f'<geom name="{n}_wall{i}" type="box" pos="{_fmt(p)}" size="{_fmt(z)}" material="bin"/>'
            for i, (p, z) in enumerate(walls)
        )
        lid = (
            f'<body name="{n}_lid" pos="0 0 {h + 0.006}"><joint name="{n}_lid_joint" type="slide" '
            f'axis="0 1 0" range="0 {2 * w + 0.02}" damping="3" frictionloss="0.3"/>'
            f'<geom name="{n}_lid_geom" type="box" size="{w + 2 * t} {w + 2 * t} 0.004" material="lid" '
            f'mass="0.1"/><geom name="{n}_handle" type="box" size="{w * 0.6} 0.008 0.012" '
            f'pos="0 {w + 2 * t - 0.012} 0.016" material="lid" mass="0.02"/></body>'
        )
        rails = (
            f'<geom name="{n}_rail0" type="box" pos="{-(w + 2 * t + 0.004)} {w + 0.03} {h + 0.006}" '
            f'size="0.003 {2 * w} 0.01" material="bin"/>'
            f'<geom name="{n}_rail1" type="box" pos="{w + 2 * t + 0.004} {w + 0.03} {h + 0.006}" '
            f'size="0.003 {2 * w} 0.01" material="bin"/>'
        )
        return (
            f'<body name="{n}" mocap="true" pos="0.5 -0.15 0.0">'
            f'<geom name="{n}_base" type="box" pos="0 0 0.002" size="{w + 2 * t} {w + 2 * t} 0.002" '
            'material="bin"/>'
            f"{geoms}{rails}{lid}</body>"
        )
    raise ValueError(f"unknown object kind {spec.kind!r}; expected cube, pad, marker, lamp or bin")


def build_scene_xml(
    objects: list[ObjectSpec], cameras_xml: str = "", offscreen: tuple[int, int] = (640, 480)
) -> str:
    """Complete MJCF [str] for the arm, table, the given objects and extra world cameras.

    ``offscreen`` (width, height) sizes the offscreen framebuffer (the renderer tiles all views in it).
    """
    objects_xml = "\n".join(_object_xml(o) for o in objects)
    act = "\n".join(
        f'<position name="act_{j}" joint="{j}" kp="{kp}" kv="{kv}" ctrlrange="{lo} {hi}" '
        f'forcerange="-{f} {f}"/>'
        for j, (lo, hi), kp, kv, f in zip(
            ARM_JOINTS, _JOINT_RANGES, [800] * 4 + [400] * 3, [60] * 4 + [25] * 3, [87] * 4 + [12] * 3
        )
    )
    fingers = "\n".join(
        f'<position name="act_{j}" joint="{j}" kp="300" kv="10" ctrlrange="0 {FINGER_OPEN}" '
        'forcerange="-25 25"/>'
        for j in FINGER_JOINTS
    )
    return f"""<mujoco model="enerverse_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_DT}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <global offwidth="{offscreen[0]}" offheight="{offscreen[1]}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.55 0.55 0.55" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.82 0.78 0.70" rgb2="0.76 0.72 0.64"
      width="256" height="256"/>
    <material name="table" texture="grid" texrepeat="6 6"/>
    <material name="arm_light" rgba="0.92 0.92 0.92 1"/>
    <material name="arm_dark" rgba="0.25 0.25 0.28 1"/>
    <material name="finger" rgba="0.15 0.15 0.15 1"/>
    <material name="bin" rgba="0.55 0.40 0.25 1"/>
    <material name="lid" rgba="0.70 0.55 0.35 1"/>
  </asset>
  <worldbody>
    <light pos="0.4 0 1.6" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" rgba="0.35 0.37 0.4 1"/>
    <geom name="table" type="box" size="0.6 0.6 0.03" pos="0.3 0 -0.03" material="table"
      friction="1 0.01 0.001"/>
{cameras_xml}
{_arm_xml()}
{objects_xml}
  </worldbody>
  <contact>
    <exclude body1="link0" body2="link1"/>
  </contact>
  <actuator>
{act}
{fingers}
  </actuator>
</mujoco>"""


def object_geom_labels(model, objects: list[ObjectSpec]) -> np.ndarray:
    """uint8 [ngeom]: ``k + 1`` for the named geoms of ``objects[k]``'s body and its sub-bodies, else 0.

    Unnamed geoms (the lamp's post) stay 0, so a mask shows what identifies the object (the lamp's
    cue sphere, a cube, a plate, the whole bin with its lid)."""
    import mujoco

    if len(objects) > 254:
        raise ValueError(f"at most 254 labelled objects fit a uint8 mask, got {len(objects)}")
    labels = np.zeros(model.ngeom, dtype=np.uint8)
    roots = {model.body(o.name).id: k + 1 for k, o in enumerate(objects)}
    for g in range(model.ngeom):
        if not mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g):
            continue
        b = int(model.geom_bodyid[g])
        while b > 0 and b not in roots:
            b = int(model.body_parentid[b])
        labels[g] = roots.get(b, 0)
    return labels
