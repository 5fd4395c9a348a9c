"""EnerVerse: chunkwise multi-view future-space generation for robot manipulation.

``enerverse.core`` holds the contracts every package shares (camera rig, episode store, configs,
checkpoints, progress/output helpers). The generator (EnerVerse-G) lands in later work.
"""

__version__ = "0.1.0"
