"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import importlib
from types import ModuleType


class GeolinkError(Exception):
    """Bad input or an unusable environment, explained in one line."""


class MissingDependency(GeolinkError):
    """An optional library is not installed."""


def require(module: str, hint: str) -> ModuleType:
    """Import ``module`` or raise a one-line error that says how to get it (``hint``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"{module} is not available ({exc.__class__.__name__}): {hint}") from None


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type's name when the message is empty), at most
    ``limit`` characters: what a one-line error quotes of a library's exception."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else exc.__class__.__name__)[:limit]


def describe(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), for a log line or a counter."""
    lines = str(exc).strip().splitlines()
    text = f"{exc.__class__.__name__}: {lines[0]}" if lines else exc.__class__.__name__
    return text[:limit]
