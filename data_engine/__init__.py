"""EnerVerse-D data engine: 4D Gaussian Splatting + generative flywheel (in progress: issue 16)."""
