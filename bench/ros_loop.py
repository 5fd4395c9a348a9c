"""The ROS 2 control loop over real topics: image-to-command latency and achieved rates.

    python bench/ros_loop.py --checkpoint checkpoints/enerverse_a_pick_place [--seconds 60] \
        [--task pick_place]

Starts the sim node and the policy node (autostart) in their own processes on a private DDS domain,
lets them run, and reads: the policy node's ``/diagnostics`` (image-to-command latency p50/p95, its
control rate, holds), the rate of ``cmd_twist`` messages and of one camera's images as received here.
Targets (docs/ros.md): 10 Hz control, p95 image-to-command <= 150 ms, cameras at 30 Hz meanwhile. JSON
under outputs/bench/ros_loop/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_summary, run_metadata, save_results  # noqa: E402

from enerverse.core.config import ConfigError  # noqa: E402
from enerverse.core.errors import user_errors  # noqa: E402


def start(module: str, params: dict, env: dict, log: Path) -> subprocess.Popen:
    args = [
        a for k, v in params.items() for a in ("-p", f"{k}:={json.dumps(v) if isinstance(v, list) else v}")
    ]
    out = open(log, "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", module, "--ros-args", *args], stdout=out, stderr=out, env=env
    )


def checkpoint_rig(folder: str) -> tuple[list[str], int]:
    """(views, resolution) of a policy checkpoint; exits with one line when there is none."""
    if not (Path(folder) / "config.json").is_file():
        raise ConfigError(f"no policy checkpoint at {folder}; expected a folder with config.json")
    meta = json.loads((Path(folder) / "config.json").read_text())["meta"]
    return list(meta["views"]), int(meta["resolution"])


def ros_env(domain: int, logs: Path) -> dict:
    """The environment of the node processes: a private DDS domain on this host, logs in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_LOG_DIR": str(logs), "EV_NO_PROGRESS": "1"}  # fmt: skip


def measure(seconds: float, domain: int, view: str) -> dict:
    """Spin an observer for ``seconds``: message times of commands and images, the last diagnostics."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import TwistStamped
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("ros_loop_bench", context=ctx)
    seen: dict = {"cmd": [], "image": [], "diag": None}
    node.create_subscription(TwistStamped, "cmd_twist", lambda m: seen["cmd"].append(time.monotonic()), 50)
    on_image = lambda m: seen["image"].append(time.monotonic())  # noqa: E731
    node.create_subscription(Image, f"camera/{view}/image_raw", on_image, qos_profile_sensor_data)

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name == "enerverse_policy":
                seen["diag"] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        ex.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown(context=ctx)
    return seen


def rate(times: list[float], skip: float) -> float:
    t = [x for x in times if x >= times[0] + skip] if times else []
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/enerverse_a_pick_place")
    ap.add_argument("--task", default="pick_place")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--control-rate", type=float, default=10.0)
    ap.add_argument("--camera-rate", type=float, default=30.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    views, R = checkpoint_rig(args.checkpoint)
    domain, logs = 100 + os.getpid() % 100, Path("outputs/bench/ros_loop/logs")
    env = ros_env(domain, logs)
    sim_params = {"task": args.task, "views": views, "resolution": R, "camera_rate": args.camera_rate,
                  "wait_for_command": False, "auto_reset": True}  # fmt: skip
    policy_params = {"checkpoint": args.checkpoint, "views": views, "autostart": True,
                     "control_rate": args.control_rate}  # fmt: skip
    procs = [
        start("ros_nodes.sim_node", sim_params, env, logs / "sim.log"),
        start("ros_nodes.policy_node", policy_params, env, logs / "policy.log"),
    ]
    try:
        seen = measure(args.seconds, domain, views[0])
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=30)
    diag = seen["diag"] or {}
    p95 = float(diag.get("image_to_command_p95_ms") or "nan")
    result = {
        "checkpoint": args.checkpoint,
        "seconds": args.seconds,
        "command_rate_hz": rate(seen["cmd"], skip=10.0),
        "camera_rate_hz": rate(seen["image"], skip=10.0),
        "policy_diagnostics": diag,
        "image_to_command_p95_ms": p95,
        "ratio_p95_to_target_150ms": p95 / 150.0,
        "ratio_rate_to_target": rate(seen["cmd"], skip=10.0) / args.control_rate,
    }
    path = save_results("ros_loop", {"meta": run_metadata(vars(args)), "result": result}, args.out)
    print_summary({**{k: v for k, v in result.items() if k != "policy_diagnostics"}, "results": str(path)})


if __name__ == "__main__":
    with user_errors():
        main()
