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

# The main job (see README): collect expert demonstrations of the default task into an episode store
# (video grid of all views + summary.json), then evaluate the scripted expert in vectorised envs.
STAMP := $(shell date +%Y%m%d-%H%M%S)
DEMO_DIR ?= outputs/demo/$(STAMP)
DEMO_TASK ?= pick_place
demo: setup
	$(VENV)/bin/ev-collect task=$(DEMO_TASK) episodes=8 workers=2 out=$(DEMO_DIR)/episodes \
		run_dir=$(DEMO_DIR)/collect $(ARGS)
	$(VENV)/bin/ev-eval task=$(DEMO_TASK) policy=expert episodes=8 num_envs=4 out=$(DEMO_DIR)/eval
	@echo "demo outputs in $(DEMO_DIR): collect/episodes.mp4 (video grid), collect/summary.json, eval/results.json"

bench: setup
	$(PY) bench/sim_throughput.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
