"""How large every task object appears, per view, measured with MuJoCo's segmentation rendering.

    python scripts/object_sizes.py [--resolution 128] [--seeds 100] [--views main anchor_left anchor_right]

For each task, object and view: the size (square root of the object's pixel area) at reset over
seeds 0..N-1 (min, 5th percentile, median), the share of seeds where it is at least 8 px across
(docs/design.md §3 "Framing"), and the share where its whole mask is in the image. Prints a table, writes
outputs/object_sizes/<resolution>.json and ends with one line of JSON (the worst main-view share).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import sim  # noqa: F401  (headless GL defaults)
from enerverse.core.outputs import write_json_atomic
from sim.cameras import DEFAULT_RESOLUTION, DEFAULT_VIEWS
from sim.framing import MIN_OBJECT_PX, framing_table
from sim.tasks import TASKS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--views", nargs="+", default=list(DEFAULT_VIEWS))
    ap.add_argument("--out", default="outputs/object_sizes")
    args = ap.parse_args()
    rows = []
    for view in args.views:
        rows += [
            {"view": view, **r.row()}
            for r in framing_table(list(TASKS), list(range(args.seeds)), args.resolution, view)
        ]
    print(
        f"{'view':<13}{'task':<14}{'object':<10}{'min':>6}{'p5':>6}{'median':>7}"
        f"{f'>={MIN_OBJECT_PX:g}px':>8}{'in frame':>9}",
        file=sys.stderr,
    )
    for r in rows:
        print(
            f"{r['view']:<13}{r['task']:<14}{r['object']:<10}{r['min_px']:>6.1f}{r['p5_px']:>6.1f}"
            f"{r['median_px']:>7.1f}{r['share_ge_8px']:>8.2f}{r['in_frame']:>9.2f}",
            file=sys.stderr,
        )
    path = Path(args.out) / f"{args.resolution}.json"
    write_json_atomic(path, {"resolution": args.resolution, "seeds": args.seeds, "rows": rows})
    main_rows = [r for r in rows if r["view"] == "main"] or rows
    worst = min(main_rows, key=lambda r: r["share_ge_8px"])
    print(
        json.dumps(
            {
                "resolution": args.resolution,
                "worst_share_ge_8px": worst["share_ge_8px"],
                "worst": f"{worst['task']}/{worst['object']}",
                "results": str(path),
            }
        )
    )


if __name__ == "__main__":
    main()
