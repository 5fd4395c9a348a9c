"""Named presets as YAML files in ``configs/<group>/`` merged onto a structured config (one home per
preset: configs/generator/, configs/policy/)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .config import ConfigError, config_from_dict

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def preset_names(group: str) -> list[str]:
    """The presets of ``configs/<group>/`` (file stems, sorted)."""
    return sorted(p.stem for p in (CONFIG_ROOT / group).glob("*.yaml"))


def load_preset(schema: type, group: str, name: str) -> Any:
    """Preset ``name`` of ``configs/<group>/<name>.yaml`` merged onto the structured ``schema`` (keys
    checked strictly) and validated; ConfigError naming the valid presets otherwise."""
    import yaml

    path = CONFIG_ROOT / group / f"{name}.yaml"
    if not path.is_file():
        names = preset_names(group)
        hint = difflib.get_close_matches(name, names, n=1)
        raise ConfigError(
            f"unknown {group} preset {name!r}; valid presets: {', '.join(names)}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
        )
    try:
        return config_from_dict(schema, yaml.safe_load(path.read_text()) or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
