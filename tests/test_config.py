"""Structured hydra configs: strict keys with suggestions, types, validate(), help and CLI exit codes."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from enerverse.core.config import (
    ConfigError,
    config_to_dict,
    load_config,
    parse_cli,
    register_config,
    save_config,
)
from enerverse.core.config_help import format_help

REPO = Path(__file__).resolve().parents[1]


class Mode(enum.Enum):
    fast = 1
    slow = 2


@dataclass
class TaskCfg:
    """Which task to run."""

    name: str = "reach"
    """Task name (reach, push, ...)."""
    horizon: int = 50
    noise: float = field(default=0.0, metadata={"help": "action noise std"})

    def validate(self) -> None:
        if self.horizon <= 0:
            raise ConfigError(f"task.horizon must be > 0, got {self.horizon}")


@dataclass
class RunCfg:
    """Collect demo episodes."""

    episodes: int = 3
    """How many episodes to collect."""
    seed: int = 0
    out: str | None = None
    mode: Mode = Mode.fast
    task: TaskCfg = field(default_factory=TaskCfg)
    views: list[str] = field(default_factory=lambda: ["main", "wrist"])

    def validate(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1, got {self.episodes}")


def test_defaults_and_overrides() -> None:
    cfg = load_config(RunCfg, ["episodes=5", "task.name=push", "mode=slow", "views=[main]", "out=/tmp/x"])
    assert isinstance(cfg, RunCfg) and isinstance(cfg.task, TaskCfg)
    assert (cfg.episodes, cfg.task.name, cfg.task.horizon, cfg.mode) == (5, "push", 50, Mode.slow)
    assert cfg.views == ["main"] and cfg.out == "/tmp/x"
    assert load_config(RunCfg, []) == RunCfg()


def test_misspelled_key_names_valid_keys_and_suggestion() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(RunCfg, ["episdoes=4"])
    msg = str(exc.value)
    assert "'episdoes'" in msg
    assert "valid keys: episodes, mode, out, seed, task, views" in msg
    assert "did you mean 'episodes'?" in msg


def test_misspelled_nested_key() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(RunCfg, ["task.horizn=3"])
    msg = str(exc.value)
    assert "task.horizn" in msg and "valid keys: horizon, name, noise" in msg
    assert "did you mean 'task.horizon'?" in msg
    with pytest.raises(ConfigError, match="has no sub-key"):
        load_config(RunCfg, ["seed.x=1"])


def test_add_override_rejected() -> None:
    with pytest.raises(ConfigError, match="not allowed for structured configs"):
        load_config(RunCfg, ["+foo=1"])


def test_wrong_type_names_key_and_expected_type() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(RunCfg, ["episodes=abc"])
    assert "'episodes'" in str(exc.value) and "expected int" in str(exc.value)
    with pytest.raises(ConfigError, match=r"'task\.horizon'.*expected int"):
        load_config(RunCfg, ["task.horizon=1.5"])


def test_validate_hooks_run_nested_and_top() -> None:
    with pytest.raises(ConfigError, match="episodes must be >= 1"):
        load_config(RunCfg, ["episodes=0"])
    with pytest.raises(ConfigError, match="task.horizon must be > 0"):
        load_config(RunCfg, ["task.horizon=-1"])


def test_registered_name_and_config_dir(tmp_path: Path) -> None:
    register_config("test_run_preset", RunCfg)
    assert load_config(RunCfg, ["seed=7"], name="test_run_preset").seed == 7
    (tmp_path / "run.yaml").write_text("episodes: 9\ntask:\n  name: stack\n")
    cfg = load_config(RunCfg, ["seed=2"], name="run", config_dir=tmp_path)
    assert (cfg.episodes, cfg.task.name, cfg.seed) == (9, "stack", 2)
    assert os.getcwd() == str(Path.cwd())  # hydra did not change directory


@pytest.fixture
def clean_config_store():
    """Groups registered by a test must not outlive it: a 'task' group would turn every later
    ``task=<name>`` override in this process into a group selection."""
    import copy

    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo
    saved = copy.deepcopy(repo)
    yield
    repo.clear()
    repo.update(saved)


def test_group_preset_selection(clean_config_store) -> None:
    register_config("test_task/push", TaskCfg(name="push", horizon=7))
    with pytest.raises(ConfigError, match="unknown config key 'test_task.x'"):
        load_config(RunCfg, ["test_task.x=1"])  # a group is not a value key
    register_config("task/test_push", TaskCfg(name="push", horizon=7))
    cfg = load_config(RunCfg, ["+task=test_push", "task.noise=0.5"])
    assert (cfg.task.name, cfg.task.horizon, cfg.task.noise) == ("push", 7, 0.5)


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_cli(RunCfg, ["--help"], prog="ev-test")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ev-test" in out
    assert "How many episodes to collect." in out and "action noise std" in out
    assert "task.horizon" in out and "default 50" in out


def test_cli_error_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_cli(RunCfg, ["episdoes=4"], prog="ev-test")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'episdoes'")
    assert parse_cli(RunCfg, ["seed=3"], prog="ev-test").seed == 3


@pytest.mark.integration
def test_cli_subprocess_exit_code() -> None:
    code = (
        "import sys; sys.path.insert(0, 'tests'); from test_config import RunCfg; "
        "from enerverse.core.config import parse_cli; parse_cli(RunCfg, None, prog='x')"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code, "episodes=abc"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error: invalid value for config key 'episodes'" in proc.stderr


def test_config_to_dict_and_save(tmp_path: Path) -> None:
    cfg = load_config(RunCfg, ["mode=slow"])
    d = config_to_dict(cfg)
    assert d["mode"] == "slow" and d["task"] == {"name": "reach", "horizon": 50, "noise": 0.0}
    path = save_config(cfg, tmp_path / "config.json")
    assert json.loads(path.read_text()) == d


@dataclass
class _Base:
    size: int = 8
    """image size in pixels"""


@dataclass
class _Child(_Base):
    steps: int = 3
    """number of steps"""


def test_help_documents_inherited_fields() -> None:
    text = format_help(_Child, "prog")
    assert "image size in pixels" in text and "number of steps" in text
