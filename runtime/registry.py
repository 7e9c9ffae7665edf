"""Pick an implementation by name: one module per name, imported only when chosen."""

from __future__ import annotations

import importlib
from types import ModuleType

from geolink_edge.errors import GeolinkError


def check_name(kind: str, name: str, names: tuple[str, ...]) -> None:
    """A one-line error listing the names there are, unless ``name`` is one of them."""
    if name not in names:
        raise GeolinkError(f"unknown {kind} {name!r} (choose from {', '.join(names)})")


def load_module(kind: str, name: str, package: str, names: tuple[str, ...]) -> ModuleType:
    """The module ``package.name``, or a one-line error listing the names there are."""
    check_name(kind, name, names)
    return importlib.import_module(f"{package}.{name}")
