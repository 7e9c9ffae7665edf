"""Pick an implementation by name, with one "unknown X, choose from ..." message everywhere."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TypeVar

from geolink_edge.errors import GeolinkError

T = TypeVar("T")


def check_name(kind: str, name: str, names: Iterable[str], error: type[Exception] = GeolinkError) -> None:
    """A one-line error listing the names there are, unless ``name`` is one of them.

    ``error``: the exception to raise; a pydantic validator needs ValueError to report it as invalid.
    """
    names = tuple(names)
    if name not in names:
        raise error(f"unknown {kind} {name!r} (choose from {', '.join(names)})")


def choose(kind: str, name: str, table: Mapping[str, T]) -> T:
    """``table[name]``, or the one-line error that lists the table's names."""
    check_name(kind, name, table)
    return table[name]


def load_module(kind: str, name: str, package: str, names: Iterable[str]) -> ModuleType:
    """The module ``package.name`` (imported only when chosen), or the one-line error."""
    check_name(kind, name, names)
    return importlib.import_module(f"{package}.{name}")
