"""Options whose default belongs to a stage's config, not to the command line.

An option left out reaches the command as ``None`` ("unset") and the config object supplies its own
default; ``--help`` shows that default, read from the config when the help is drawn. The config's
module is imported only then, so building the command line stays fast and light.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

import typer


def own_default(owner: Any, name: str) -> Any:
    """The default of field ``name`` of a pydantic model or dataclass, or of keyword ``name`` of a
    callable (a class's ``__init__``)."""
    fields = getattr(owner, "model_fields", None)
    if fields is not None:
        return fields[name].get_default(call_default_factory=True)
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        has_factory = field.default_factory is not dataclasses.MISSING
        return field.default_factory() if has_factory else field.default
    return inspect.signature(owner).parameters[name].default


class ConfDefault:
    """Click calls a callable default when the option is not given: this one answers ``None``, and
    reads as the config's own default in ``--help``."""

    def __init__(self, owner: str, name: str):
        self.owner, self.name = owner, name  # owner: "package.module:Class"

    def __call__(self) -> None:
        return None

    def __str__(self) -> str:
        module, _, attribute = self.owner.partition(":")
        value = own_default(getattr(importlib.import_module(module), attribute), self.name)
        value = getattr(value, "value", value)  # an enum member shows as its name on the command line
        return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def conf_option(owner: str, name: str, *flags: str, help: str) -> Any:
    """A typer option that is ``None`` unless given and shows ``owner``'s default for ``name``."""
    return typer.Option(ConfDefault(owner, name), *flags, help=help)


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (those not ``None``), to pass on as keyword arguments."""
    return {key: value for key, value in options.items() if value is not None}


def validated(model: Any, **options: Any) -> Any:
    """``model(**options)`` of a pydantic model; its first complaint as one line naming the option."""
    from pydantic import ValidationError

    from geolink_edge.errors import GeolinkError

    try:
        return model(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise GeolinkError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
