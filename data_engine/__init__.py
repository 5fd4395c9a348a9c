"""EnerVerse-D data engine: 4D Gaussian Splatting + generative flywheel (docs/data_engine.md)."""
