"""EnerVerse-A: observation encoders, the diffusion action head, policy data, training and PolicyRuntime."""
