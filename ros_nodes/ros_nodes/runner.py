"""The ``main()`` of every node: init rclpy, spin the node until Ctrl-C or a shutdown, clean up."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor


def run_node(make: Callable[[], object], args: list[str] | None = None, threads: int = 1) -> None:
    """Spin ``make()`` with ``threads`` executor threads; its ``close()`` (if any) runs on the way out."""
    rclpy.init(args=args)
    node = make()
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if hasattr(node, "close"):
            node.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
