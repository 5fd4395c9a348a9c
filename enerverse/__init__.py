"""EnerVerse: chunkwise multi-view future-space generation for robot manipulation.

``enerverse.core`` holds the contracts every package shares (camera rig, episode store, configs,
checkpoints, progress/output helpers); the rest of the package is the generator, EnerVerse-G
(docs/generator.md).
"""

__version__ = "0.1.0"
