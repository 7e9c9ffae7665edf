"""The runtime's configs as YAML: ``run --config FILE`` (and ``locate``) reads one, ``config show``
prints the defaults with a comment on each field, and the flight log opens with the one in effect.

The defaults, then the file, then the command line: each overrides the one before. A key the config
does not have, or a value of the wrong type, is a one-line error naming the key.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import io
import json
import re
import tokenize
import typing
from pathlib import Path
from typing import Any

from geolink_edge.errors import GeolinkError


def conf_classes() -> dict[str, type]:
    """The run config and the configs nested in it, by name (``run``, ``locate``, ``verify``, …)."""
    from geolink_edge.runtime.loop import RunConf

    found, todo = {"run": RunConf}, [RunConf]
    while todo:
        for name, hint in typing.get_type_hints(todo.pop()).items():
            if dataclasses.is_dataclass(hint):
                found[name] = hint
                todo.append(hint)
    return found


def to_dict(conf: Any) -> dict:
    """A config as plain data (tuples as lists, enums as their values), for YAML and JSON."""
    return json.loads(json.dumps(dataclasses.asdict(conf), default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a config value")


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys replacing its own, nested mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


def build(cls: type, data: Any, where: str = "") -> Any:
    """``cls`` from the mapping ``data``, every key and value checked; ``where``: the key path so far."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(data, dict):
        raise GeolinkError(f"{where.rstrip('.') or 'the config'}: a mapping of keys expected, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in names:
            raise GeolinkError(f"unknown key {where}{key} (choose from {', '.join(names)})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = build(hint, value, f"{where}{key}.")
            continue
        try:
            values[key] = TypeAdapter(hint).validate_python(value)
        except ValidationError as exc:
            raise GeolinkError(f"{where}{key}: {exc.errors()[0]['msg']}, got {value!r}") from None
    return cls(**values)


def read(path: str | Path) -> dict:
    """The mapping in a YAML file, or a one-line error."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GeolinkError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise GeolinkError(f"{path}: not YAML ({' '.join(str(exc).split())[:160]})") from None
    if data is not None and not isinstance(data, dict):
        raise GeolinkError(f"{path}: a mapping of keys expected at the top")
    return data or {}


def load(cls: type, path: str | Path | None, overrides: dict | None = None) -> Any:
    """``cls``'s defaults, overridden by the file at ``path`` (if any), then by ``overrides``."""
    data = merged(read(path) if path is not None else {}, overrides or {})
    try:
        return build(cls, data)
    except GeolinkError as exc:
        raise GeolinkError(f"{path}: {exc}" if path is not None else str(exc)) from None


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in ``cls``'s source: the one on its line, else the lines just above it."""
    lines = inspect.getsource(cls).splitlines(keepends=True)
    comments: dict[int, str] = {}  # line number → the comment on it
    for token in tokenize.generate_tokens(io.StringIO("".join(lines)).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    found = {}
    for number, line in enumerate(lines, 1):
        match = re.match(r"\s+(\w+):", line)
        if not match:
            continue
        above, row = [], number - 1
        while row in comments and lines[row - 1].lstrip().startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        text = comments.get(number) if not line.lstrip().startswith("#") else None
        found[match.group(1)] = " ".join(part for part in (text, *above) if part)
    return found


def show(cls: type, title: str) -> str:
    """``cls``'s defaults as YAML, one comment per field."""
    lines = [f"# {title}", "# every key may be left out; options given on the command line win over the file"]
    _show(cls, cls(), 0, lines)
    return "\n".join(lines) + "\n"


def _show(cls: type, conf: Any, depth: int, lines: list[str]) -> None:
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value, pad = getattr(conf, f.name), "  " * depth
        comment = comments.get(f.name) or ""
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{pad}{f.name}:  # {comment or 'the ' + hints[f.name].__name__ + ' fields'}")
            _show(hints[f.name], value, depth + 1, lines)
        else:
            text = json.dumps(value, ensure_ascii=False, default=_plain)
            lines.append(f"{pad}{f.name}: {text}" + (f"  # {comment}" if comment else ""))
