"""EnerVerse-A action head, baseline policies and PolicyRuntime (not built yet; see the open issues)."""
