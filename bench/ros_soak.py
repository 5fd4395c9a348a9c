"""A soak of the ROS 2 policy node under fault injection: does it hold the arm in time, every time, and
keep running?

    python bench/ros_soak.py --checkpoint checkpoints/enerverse_a_pick_place [--minutes 10]

Starts the policy node (autostart, the checkpoint's views and resolution) in its own process on a
private DDS domain, and a stand-in robot driver in this process (``ros_nodes.faults.FakeRobot``: the
views at 20 Hz, joint states, the end-effector pose). Then, in turn until ``--minutes`` have passed,
it injects one fault, keeps it for ``--fault-seconds``, clears it and waits for the arm to move
again: a malformed image, silent cameras, a non-finite joint,
out-of-order (old) stamps, the e-stop (then its reset service), and a restart of the camera driver.

Per fault: the hold latency (from the fault to the first hold after the last moving command while
the fault lasted; ordinary holds between chunks do not count) against its bound, moving commands
past that bound, and the time to move again. Bounds (:func:`bounds`): a bad message (malformed
image, non-finite joint, old stamps) is seen when the driver next publishes and held at the next
tick: one driver period + one control period; silent cameras: ``max_input_age`` (the node holds
before the last image ages out); the e-stop: one control period. Targets (docs/ros.md): 0 node
crashes; the arm held within the bound of every fault. JSON under outputs/bench/ros_soak/.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402
from ros_loop import checkpoint_rig, ros_env, start  # noqa: E402

from enerverse.core.errors import user_errors  # noqa: E402

CYCLE = ("bad_image", "cameras_silent", "nan_joints", "old_stamps", "estop", "restart_cameras")
SLACK_S = 0.1  # delivery and executor jitter on top of the bound


DRIVER_RATE = 20.0  # Hz, the stand-in driver's publishing rate


def bounds(control_rate: float, max_input_age: float) -> dict[str, float]:
    """Seconds from each fault to the hold it must cause (module docstring)."""
    period = 1.0 / control_rate
    seen = 1.0 / DRIVER_RATE + period
    return {"bad_image": seen, "nan_joints": seen, "old_stamps": seen, "cameras_silent": max_input_age,
            "estop": period}  # fmt: skip


def first_after(obs, t0: float, want_moving: bool) -> float | None:
    """Arrival time of the first command after ``t0`` that moves (or holds)."""
    from ros_nodes.faults import moving

    return next((t for t, m in obs.twists if t > t0 and moving(m) == want_moving), None)


def inject(obs, robot, fault: str, bound: dict, fault_s: float) -> dict:
    """One fault: wait until the arm moves, inject, time the hold, clear, time the recovery."""
    from ros_nodes.faults import moving
    from std_msgs.msg import Bool

    t0 = time.monotonic()
    obs.spin_until(lambda: first_after(obs, t0, True) is not None, timeout=30)
    obs.spin_until(lambda: False, timeout=0.5)  # moving for a while: no hold left over from before
    if fault == "estop":
        robot.estop.publish(Bool(data=True))
    elif fault == "restart_cameras":
        robot.restart_cameras()
    else:
        robot.fault = fault
    t_fault = time.monotonic()
    row: dict = {"fault": fault}
    if fault != "restart_cameras":  # a restart need not hold: the next images arrive within a period
        limit = bound[fault]
        obs.spin_until(lambda: False, timeout=max(fault_s, limit + SLACK_S + 0.5))
        during = [(t, moving(m)) for t, m in obs.twists if t > t_fault]
        last_move = max((t for t, mv in during if mv), default=t_fault)
        held = next((t for t, mv in during if t > last_move and not mv), None)  # held from here on
        latency = None if held is None else held - t_fault
        late = sum(mv and t > t_fault + limit + SLACK_S for t, mv in during)
        in_time = latency is not None and latency <= limit + SLACK_S
        row.update(hold_latency_s=latency, bound_s=limit, held_in_time=in_time, moving_while_faulted=late)
    robot.fault = None
    if fault == "estop":
        row["estop_reset"] = obs.reset_estop()
    t_clear = time.monotonic()
    obs.spin_until(lambda: first_after(obs, t_clear, True) is not None, timeout=30)
    moved = first_after(obs, t_clear, True)
    row["recovered_s"] = None if moved is None else moved - t_clear
    return row


def summarise(rows: list[dict], crashed: bool, tracebacks: int, minutes: float) -> dict:
    faults = [r for r in rows if "held_in_time" in r]
    by_kind: dict = {}
    for r in rows:
        k = by_kind.setdefault(r["fault"], {"n": 0, "held_in_time": 0, "max_hold_latency_s": 0.0,
                                            "max_recovered_s": 0.0})  # fmt: skip
        k["n"] += 1
        k["held_in_time"] += int(r.get("held_in_time", True))
        k["max_hold_latency_s"] = max(k["max_hold_latency_s"], r.get("hold_latency_s") or 0.0)
        if r["recovered_s"] is None or k["max_recovered_s"] is None:
            k["max_recovered_s"] = None  # it never moved again after this fault
        else:
            k["max_recovered_s"] = max(k["max_recovered_s"], r["recovered_s"])
    return {
        "minutes": minutes,
        "faults_injected": len(rows),
        "held_in_time": sum(r["held_in_time"] for r in faults),
        "hold_faults": len(faults),
        "moving_while_faulted": sum(r["moving_while_faulted"] for r in faults),
        "never_recovered": sum(r["recovered_s"] is None for r in rows),
        "policy_node_crashed": crashed,
        "tracebacks_in_log": tracebacks,
        "by_fault": by_kind,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/enerverse_a_pick_place")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fault-seconds", type=float, default=1.5)
    ap.add_argument("--control-rate", type=float, default=10.0)
    ap.add_argument("--max-input-age", type=float, default=0.3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    views, size = checkpoint_rig(args.checkpoint)
    domain, logs = 100 + (os.getpid() + 37) % 100, Path("outputs/bench/ros_soak/logs")
    env = ros_env(domain, logs)
    params = {"checkpoint": args.checkpoint, "views": views, "autostart": True,
              "control_rate": args.control_rate, "max_input_age": args.max_input_age,
              "max_linear_speed": 5.0, "max_angular_speed": 50.0,
              "max_step": [1.0] * 7, "workspace_min": [-5.0] * 3, "workspace_max": [5.0] * 3}  # fmt: skip
    pol = start("ros_nodes.policy_node", params, env, logs / "policy.log")
    rows: list[dict] = []
    from ros_nodes.faults import CommandObserver, FakeRobot

    os.environ["ROS_DOMAIN_ID"] = str(domain)
    obs = CommandObserver(domain)
    robot = FakeRobot(obs, views, size=size, rate=DRIVER_RATE)
    bound = bounds(args.control_rate, args.max_input_age)
    try:
        if not obs.spin_until(lambda: first_after(obs, 0.0, True) is not None, timeout=120):
            raise SystemExit(f"error: the policy node never moved the arm; see {logs / 'policy.log'}")
        t_end = time.monotonic() + 60 * args.minutes
        while time.monotonic() < t_end and pol.poll() is None:
            rows.append(inject(obs, robot, CYCLE[len(rows) % len(CYCLE)], bound, args.fault_seconds))
    finally:
        crashed = pol.poll() is not None
        obs.close()
        if not crashed:
            pol.send_signal(signal.SIGINT)
            pol.wait(timeout=30)
    log = (logs / "policy.log").read_text()
    result = {**summarise(rows, crashed, log.count("Traceback"), args.minutes), "bounds_s": bound}
    path = save_results("ros_soak", {"meta": run_metadata(vars(args)), "result": result, "faults": rows},
                        args.out)  # fmt: skip
    print_summary({**{k: v for k, v in result.items() if k != "by_fault"}, "results": str(path)})


if __name__ == "__main__":
    with user_errors():
        main()
