"""Shared contracts of the EnerVerse stack: camera rig, episode store, configs, checkpoints, outputs,
seeding, progress and device helpers.

Kept light on purpose: nothing is imported here, and torch is only imported inside the functions that
need it, so ``sim`` can use ``enerverse.core`` in an environment without torch.
"""
