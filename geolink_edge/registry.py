"""Pick an implementation by name, with one "unknown X, choose from ..." message everywhere."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
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


@cache
def choices(package: str) -> tuple[str, ...]:
    """The names ``package`` offers: its modules whose class says ``name = "<the module's name>"``
    (``name = "sift"`` in ``sift.py``; base and helper modules name nothing), so that adding a choice
    is adding its file. The files are read, not imported: listing the names in ``--help`` stays light."""
    folders = importlib.util.find_spec(package).submodule_search_locations
    found = []
    for info in pkgutil.iter_modules(folders):
        source = Path(info.module_finder.path, f"{info.name}.py")
        if source.is_file() and re.search(rf'^\s+name = "{info.name}"', source.read_text(), re.M):
            found.append(info.name)
    return tuple(found)


def load_module(kind: str, name: str, package: str) -> ModuleType:
    """The module ``package.name`` of one of the package's :func:`choices` (imported only when
    chosen), or the one-line error that lists them."""
    check_name(kind, name, choices(package))
    return importlib.import_module(f"{package}.{name}")


def implementations(kind: str, package: str, attribute: str, base: type) -> dict[str, type]:
    """The class ``attribute`` of each of the package's :func:`choices` that subclasses ``base``
    (every choice is imported)."""
    classes = {name: getattr(load_module(kind, name, package), attribute) for name in choices(package)}
    return {name: cls for name, cls in classes.items() if issubclass(cls, base)}
