"""Structured (dataclass) hydra configs: registration, strict loading, a small CLI and JSON export.

Every entry point describes its settings as a dataclass and calls :func:`parse_cli`. Overrides are
hydra's ``key=value`` syntax with dotted keys for nested dataclasses. Unknown keys are rejected before
hydra sees them, with the valid keys at that level and the closest match. Hydra is only used through
its compose API, so it never changes the working directory or creates output folders.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

from .errors import EnerVerseError, user_errors
from .outputs import to_jsonable, write_json_atomic


class ConfigError(EnerVerseError, ValueError):
    """A config override or value is invalid; the message says which key and why."""


def _split_name(name: str) -> tuple[str | None, str]:
    group, _, base = name.rpartition("/")
    return (group or None), base


def register_config(name: str, schema: Any) -> None:
    """Store a dataclass (or a dataclass instance, e.g. a preset) in hydra's ConfigStore as ``name``.

    ``name`` may be ``group/name``; such a config can then be selected with ``group=name``.
    """
    from hydra.core.config_store import ConfigStore

    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"register_config needs a dataclass or dataclass instance, got {schema!r}")
    group, base = _split_name(name)
    ConfigStore.instance().store(name=base, node=schema, group=group)


def _hints(schema: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(schema)
    except Exception:  # unresolved forward references: fall back to the raw annotations
        return {f.name: f.type for f in dataclasses.fields(schema)}


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_name(tp: Any) -> str:
    """Readable name of a type hint: ``int``, ``list[int]``, ``str | None``, ``one of a, b``."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.name for m in tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{args}]" if args else base
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _resolve_key(schema: type, key: str) -> Any:
    """Check a dotted key against the dataclass tree and return its type hint (``Any`` below dicts)."""
    cur: Any = schema
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if dataclasses.is_dataclass(cur):
            hints = _hints(cur)
            names = [f.name for f in dataclasses.fields(cur)]
            if part not in names:
                where = f" under '{here}'" if here else ""
                msg = f"unknown config key '{key}'{where}; valid keys: {', '.join(sorted(names))}"
                close = difflib.get_close_matches(part, names, n=1, cutoff=0.5)
                if close:
                    msg += f"; did you mean '{'.'.join([*parts[:i], close[0]])}'?"
                raise ConfigError(msg)
            cur = _unwrap_optional(hints[part])
            continue
        origin = typing.get_origin(cur) or cur
        if cur is Any or origin in (dict, list, tuple) or isinstance(cur, str):
            return Any  # free-form container: hydra/omegaconf check the rest
        raise ConfigError(f"config key '{here}' is a {_type_name(cur)} and has no sub-key '{part}'")
    return cur


def check_overrides(
    schema: type, overrides: list[str], groups: typing.Callable[[str], bool] | None = None
) -> tuple[list[Any], list[Any]]:
    """Parse hydra overrides and check every key against ``schema``; raise ConfigError on a bad one.

    Returns ``(group_selections, value_overrides)`` as hydra ``Override`` objects; a key counts as a
    group selection when ``groups(key)`` is true (e.g. ``task=pick`` with ``configs/task/pick.yaml``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse override: {e}") from None
    selections, values = [], []
    for ov in parsed:
        key = ov.key_or_group
        if groups is not None and not key.startswith("hydra") and groups(key):
            selections.append(ov)
            continue
        if ov.type == OverrideType.ADD:
            raise ConfigError(
                f"'{ov.input_line}': adding keys with '+' is not allowed for structured configs; "
                f"use '{ov.input_line.lstrip('+')}' to set an existing key"
            )
        _resolve_key(schema, key)
        if ov.type == OverrideType.DEL:
            raise ConfigError(f"'{ov.input_line}': deleting keys is not supported; set '{key}=...' instead")
        if ov.is_sweep_override():
            raise ConfigError(f"'{ov.input_line}': sweeps are not supported, give a single value")
        if ov.package is not None:
            raise ConfigError(f"'{ov.input_line}': '{key}' is not a config group")
        values.append(ov)
    return selections, values


def _hint_at(schema: type, full_key: str) -> Any:
    key = full_key.split("[", 1)[0]
    try:
        return _resolve_key(schema, key) if key else schema
    except ConfigError:
        return None


def _convert_error(schema: type, err: BaseException) -> ConfigError:
    """Turn an omegaconf/hydra exception into a ConfigError naming the key and the expected type."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    cause: BaseException = err
    while not isinstance(cause, OmegaConfBaseException) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException):
        full_key = str(getattr(cause, "full_key", "") or "")
        detail = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        if isinstance(cause, MissingMandatoryValue):
            return ConfigError(
                f"missing value for required config key '{full_key}' (set it with {full_key}=...)"
            )
        hint = _hint_at(schema, full_key)
        expected = f"expected {_type_name(hint)}: " if hint not in (None, Any) else ""
        return ConfigError(f"invalid value for config key '{full_key}': {expected}{detail}")
    return ConfigError(" ".join(str(err).split()) or type(err).__name__)


def _validate_tree(obj: Any) -> None:
    """Call ``validate()`` on nested dataclasses first, then on ``obj`` itself."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        _validate_tree(getattr(obj, f.name))
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from e


def load_config(
    schema: type,
    overrides: list[str] | None = None,
    name: str | None = None,
    config_dir: str | Path | None = None,
) -> Any:
    """Compose ``schema`` (or the stored/yaml config ``name``) with ``overrides``; return a schema instance.

    ``name`` is a config registered with :func:`register_config` or a yaml file in ``config_dir``; by
    default the schema itself is registered under a private name. Hydra composes ``name`` with the
    config-group selections among ``overrides``; the result is merged onto the schema (struct mode,
    types checked), the value overrides are applied, and ``OmegaConf.to_object`` + ``validate()`` run.
    """
    from hydra import compose, initialize, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"load_config needs a dataclass type, got {schema!r}")
    overrides = list(overrides or [])
    if name is None:
        name = "_ev_" + f"{schema.__module__}.{schema.__qualname__}".replace(".", "_").replace("<", "_")
        name = name.replace(">", "_")
        register_config(name, schema)
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()  # an enclosing hydra app is restored below
    try:
        if config_dir is not None:
            init: Any = initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None)
        else:
            init = initialize(config_path=None, version_base=None)
        with init:
            loader = GlobalHydra.instance().config_loader()
            selections, values = check_overrides(schema, overrides, groups=loader.repository.group_exists)
            try:
                composed = compose(config_name=name, overrides=[o.input_line for o in selections])
                merged = OmegaConf.merge(OmegaConf.structured(schema), composed)
                OmegaConf.set_struct(merged, True)
                for ov in values:  # applied on the typed tree, so yaml configs need not list every key
                    OmegaConf.update(merged, ov.key_or_group, ov.value(), merge=True)
                obj = OmegaConf.to_object(merged)
            except (HydraException, OmegaConfBaseException) as e:
                raise _convert_error(schema, e) from None
    finally:
        if outer is not None:
            GlobalHydra.instance().initialize(outer)
    _validate_tree(obj)
    return obj


def with_experiment(args: list[str], prog: str) -> list[str]:
    """Replace ``experiment=<name>[:<step>]`` by that experiment step's settings for ``prog``; the
    other arguments follow them, so they override the file."""
    refs = [a.split("=", 1)[1] for a in args if a.startswith("experiment=")]
    if not refs:
        return args
    from enerverse.core.experiment import entry_args

    rest = [a for a in args if not a.startswith("experiment=")]
    return [*entry_args(refs[-1], prog, rest), *rest]


def parse_cli(
    schema: type,
    argv: list[str] | None = None,
    prog: str = "ev",
    name: str | None = None,
    config_dir: str | Path | None = None,
) -> Any:
    """Parse ``key=value`` arguments into ``schema``; ``-h``/``--help`` prints help and exits 0.

    On a bad override prints ``error: <message>`` to stderr and exits with code 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        from .config_help import format_help

        print(format_help(schema, prog), flush=True)
        raise SystemExit(0)
    with user_errors():
        args = with_experiment(args, prog)
        flags = [a for a in args if a.startswith("-") and not a.startswith("~")]
        if flags:
            raise ConfigError(
                f"unrecognised option {flags[0]!r}; use key=value overrides (see {prog} --help)"
            )
        return load_config(schema, args, name=name, config_dir=config_dir)


def config_from_dict(schema: type, d: dict) -> Any:
    """A ``schema`` instance from its JSON form (:func:`config_to_dict`): keys checked strictly, types
    converted, ``validate()`` run; ConfigError otherwise."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        base = OmegaConf.structured(schema)
        OmegaConf.set_struct(base, True)
        obj = OmegaConf.to_object(OmegaConf.merge(base, d))
    except OmegaConfBaseException as e:
        raise _convert_error(schema, e) from None
    _validate_tree(obj)
    return obj


def config_to_dict(cfg: Any) -> dict:
    """A plain JSON-able dict of a dataclass instance, DictConfig or mapping (enums by name)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if not isinstance(cfg, dict):
        raise TypeError(f"config_to_dict needs a dataclass instance, DictConfig or dict, got {type(cfg)}")
    return to_jsonable(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as JSON, atomically; returns the path."""
    return write_json_atomic(path, config_to_dict(cfg))


def parse_cli_with_preset(
    schema: type,
    argv: list[str] | None,
    prog: str,
    group: str,
    get_preset: Any,
    default: str = "tiny",
) -> Any:
    """:func:`parse_cli` where ``preset=<name>`` first picks the defaults of the ``group`` field
    (``get_preset(name)``), which dotted ``group.*`` overrides then refine. An unknown preset prints
    the error (with the valid names) and exits with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not ("-h" in args or "--help" in args):
        with user_errors():
            args = with_experiment(args, prog)
    preset = next((a.split("=", 1)[1] for a in args if a.startswith("preset=")), default)
    with user_errors():
        defaults = get_preset(preset)
    name = f"_{prog.replace('-', '_')}_{preset}"
    register_config(name, schema(preset=preset, **{group: defaults}))
    return parse_cli(schema, args, prog=prog, name=name)


def config_differences(
    stored: dict, current: dict, defaults: dict | None = None, prefix: str = ""
) -> list[str]:
    """Dotted paths where ``current`` differs from a checkpoint's ``stored`` config. A key missing from
    ``stored`` (a setting added after the checkpoint was written) counts as its value in ``defaults``,
    so an older run resumes as long as the new setting keeps its default."""
    defaults = defaults or {}
    out = []
    for k in sorted(set(stored) | set(current)):
        path, d = f"{prefix}{k}", defaults.get(k)
        a = stored.get(k, d)
        b = current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, d if isinstance(d, dict) else {}, path + ".")
        elif a != b:
            out.append(path)
    return out


def config_value(cfg: dict, path: str, defaults: dict | None = None) -> Any:
    """The value at dotted ``path`` of a config dict (``defaults``' where ``cfg`` lacks it; None when
    neither has it)."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return config_value(defaults, path) if defaults else None
        node = node[part]
    return node


def describe_differences(stored: dict, current: dict, defaults: dict | None = None) -> str:
    """The differing settings as ``path: stored -> current``, joined by ``; `` (for one error line)."""
    diff = config_differences(stored, current, defaults)
    return "; ".join(
        f"{p}: {config_value(stored, p, defaults)!r} -> {config_value(current, p)!r}" for p in diff
    )
