"""EnerVerse-D data engine: 4D Gaussian Splatting + generative flywheel (not built yet; see open issues)."""
