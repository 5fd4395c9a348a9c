# EnerVerse stack: one command each for set-up, tests and the main job.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export ROS_LOG_DIR ?= $(CURDIR)/outputs/ros_log
export EV_NO_PROGRESS ?=

.PHONY: setup test test-all lint demo bench clean

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

# The main job (see README): collect expert demonstrations of the default task, train the codec, the
# generator and the EnerVerse-A policy at the small preset, evaluate in simulation and write a report
# (report.md with the success table, loss curves and imagined-vs-real pictures) - about 20 minutes.
STAMP := $(shell date +%Y%m%d-%H%M%S)
DEMO_DIR ?= outputs/demo/$(STAMP)
DEMO_TASK ?= pick_place
demo: setup
	$(PY) scripts/demo.py --out $(DEMO_DIR) --task $(DEMO_TASK) $(ARGS)

bench: setup
	$(PY) bench/sim_throughput.py
	$(PY) bench/generator.py
	$(PY) bench/policy_latency.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
