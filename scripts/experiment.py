"""Run an experiment file, the same as ``ev-experiment`` (see :mod:`enerverse.core.experiment`).

python scripts/experiment.py configs/experiment/generator_pretrained.yaml [--only train] [--dry-run]
"""

from enerverse.core.experiment import main

if __name__ == "__main__":
    main()
