"""``ev-convert``: move episodes between an episode store and a LeRobotDataset v3.0 folder.

    ev-convert src=data/pick_place dst=exports/pick_place_lerobot      # store -> LeRobot
    ev-convert src=exports/pick_place_lerobot dst=data/from_lerobot    # LeRobot -> store

The direction follows ``src``: an episode store becomes a LeRobot folder, a LeRobot folder (with
``meta/info.json``) becomes a store. The layout is in :mod:`enerverse.core.store.lerobot`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enerverse.core.config import ConfigError, parse_cli
from enerverse.core.errors import user_errors
from enerverse.core.outputs import print_summary
from enerverse.core.progress import progress
from enerverse.core.store import EpisodeStore
from enerverse.core.store.lerobot import lerobot_to_store, store_to_lerobot


@dataclass
class ConvertConfig:
    """Settings of ``ev-convert``."""

    src: str = ""
    """an episode store (exported to LeRobot) or a LeRobotDataset v3.0 folder (imported to a store)"""
    dst: str = ""
    """the new folder (absent or empty)"""

    def validate(self) -> None:
        if not self.src or not self.dst:
            raise ConfigError("ev-convert needs src=<folder> and dst=<new folder>")
        if not Path(self.src).is_dir():
            raise ConfigError(f"src={self.src} is not a folder")


def convert(cfg: ConvertConfig) -> dict:
    """Run the conversion ``cfg`` describes; returns its summary."""
    src = Path(cfg.src)
    if (src / "meta" / "info.json").is_file():
        summary = lerobot_to_store(src, Path(cfg.dst), lambda it: progress(it, desc="import", unit="ep"))
        return {"direction": "lerobot->store", **summary}
    store = EpisodeStore.open(src)
    summary = store_to_lerobot(store, Path(cfg.dst), lambda it: progress(it, desc="export", unit="ep"))
    return {"direction": "store->lerobot", **summary}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ev-convert``."""
    cfg = parse_cli(ConvertConfig, argv, prog="ev-convert")
    with user_errors():
        summary = convert(cfg)
    if summary.get("not_exported"):
        print(f"note: {', '.join(summary['not_exported'])} were not exported (LeRobot has no such features)")
    print_summary(summary)


if __name__ == "__main__":
    main()
