"""``--help`` of the structured-config entry points: every (nested) key with its type, default and the
attribute docstring that follows the field in the dataclass source."""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import textwrap

from .config import _hints, _type_name, _unwrap_optional


def _field_docs(schema: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) read from the class source,
    including inherited dataclass fields (a subclass's docstring wins)."""
    docs: dict[str, str] = {}
    for base in reversed(schema.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs.update(_own_field_docs(base))
    docs.update(_own_field_docs(schema))
    return docs


def _own_field_docs(schema: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(schema)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for stmt, nxt in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _help_lines(schema: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    hints, docs = _hints(schema), _field_docs(schema)
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        tp = _unwrap_optional(hints.get(f.name, f.type))
        doc = str(f.metadata.get("help", "")) or docs.get(f.name, "")
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            rows.append((key, tp.__name__, "", doc))
            rows.extend(_help_lines(tp, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "???"
        shown = default.name if isinstance(default, enum.Enum) else default
        rows.append((key, _type_name(hints.get(f.name, f.type)), repr(shown), doc))
    return rows


def format_help(schema: type, prog: str) -> str:
    """Help text: every (nested) field with its type, default and help."""
    doc = inspect.getdoc(schema) or ""
    first = doc.splitlines()[0] if doc and not doc.startswith(schema.__name__ + "(") else ""
    lines = [f"usage: {prog} [key=value ...]", ""]
    if first:
        lines += [first, ""]
    lines.append("Set any value with hydra overrides (dotted keys for nested settings), e.g. seed=1.")
    from enerverse.core.experiment import experiments_for

    names = experiments_for(prog)
    if names:
        lines += ["", f"experiment=<name>[:<step>] starts from that file's {prog} step (configs/experiment):",
                  "  " + ", ".join(names)]  # fmt: skip
    lines += ["", "keys:"]
    rows = _help_lines(schema)
    w_key = max((len(r[0]) for r in rows), default=0)
    w_type = max((len(r[1]) for r in rows), default=0)
    for key, tp, default, doc in rows:
        default_txt = f"default {default}" if default else "(group)"
        lines.append(f"  {key:<{w_key}}  {tp:<{w_type}}  {default_txt}" + (f"  {doc}" if doc else ""))
    return "\n".join(lines)
