"""The ``main()`` of every node: init rclpy, spin the node until Ctrl-C or a shutdown, clean up.

A node must leave on Ctrl-C: ``ros2 launch`` and the operator expect it. Cleanup (the inference
worker, the DDS participant, executor threads) runs under a deadline; past it the threads' stacks go
to stderr (so a stall can be diagnosed from the log) and the process exits anyway."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

EXIT_DEADLINE_S = 10.0


def _exit_deadline(seconds: float) -> None:
    """Start a daemon timer that dumps every thread's stack and ends the process after ``seconds``."""

    def expire() -> None:
        msg = f"[ros_nodes] shutdown stalled for {seconds:.0f} s; thread stacks follow, exiting"
        print(msg, file=sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def run_node(make: Callable[[], object], args: list[str] | None = None, threads: int = 1) -> None:
    """Spin ``make()`` with ``threads`` executor threads; its ``close()`` (if any) runs on the way out."""
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 <pid>`: the stacks of a live node, for diagnosis
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    rclpy.init(args=args)
    node = make()
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        _exit_deadline(EXIT_DEADLINE_S)
        executor.shutdown(timeout_sec=2.0)
        if hasattr(node, "close"):
            node.close()
        node.destroy_node()
        rclpy.try_shutdown()
