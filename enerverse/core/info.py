"""``ev-info``: print what this machine can run (torch, CUDA, gsplat, rclpy, MuJoCo rendering)."""

from __future__ import annotations

import sys

from .device import capabilities, headless_gl_defaults, pick_device
from .outputs import print_summary


def format_table(info: dict) -> str:
    """Two aligned columns, one key per line."""
    width = max((len(k) for k in info), default=0)
    lines = []
    for key, value in info.items():
        shown = "-" if value is None else ("yes" if value is True else "no" if value is False else str(value))
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print a readable table of :func:`capabilities`, then the same dict as one line of JSON."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print("usage: ev-info\n\nPrint the capabilities of this machine as a table and as one JSON line.")
        return 0
    if args:
        print(f"error: ev-info takes no arguments, got {' '.join(args)}", file=sys.stderr)
        return 2
    headless_gl_defaults()  # report the backend the sim will actually use
    info = capabilities()
    info["device"] = pick_device("auto")
    print(format_table(info), flush=True)
    print_summary(info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
