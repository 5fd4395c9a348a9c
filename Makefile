# EnerVerse stack: one command each for set-up, tests and the main job.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export ROS_LOG_DIR ?= $(CURDIR)/outputs/ros_log
export EV_NO_PROGRESS ?=

.PHONY: setup test test-all lint demo train bench clean

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.setup-done

# The CI suite: unit + integration tests on CPU (gpu tests skip themselves, slow ones are excluded).
test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# The main job (see README): roll out the shipped EnerVerse-A checkpoint in simulation (20 seeded
# episodes) and write report.md (success table with CIs, success plot, imagined-vs-real video).
STAMP := $(shell date +%Y%m%d-%H%M%S)
DEMO_DIR ?= outputs/demo/$(STAMP)
demo: setup
	$(PY) scripts/demo.py --out $(DEMO_DIR) $(ARGS)

# From scratch in ~20 minutes: collect -> adapt the pretrained generator -> EnerVerse-A -> evaluate.
train: setup
	$(PY) scripts/experiment.py configs/experiment/quick_pick_place.yaml

bench: setup
	$(PY) bench/sim_throughput.py
	$(PY) bench/generator.py
	$(PY) bench/policy_latency.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
