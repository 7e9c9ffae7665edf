"""The ``geolink-edge`` command line.

Each command lives in ``geolink_edge.commands.<name>`` and imports its stage lazily inside the
command, so ``geolink-edge --help`` is fast and works with only the runtime dependencies.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from geolink_edge.errors import GeolinkError, first_line

# Modules of geolink_edge.commands; each exposes register(app).
COMMAND_MODULES = [
    "info",
    "train",
    "evaluate",
    "export",
    "export_matching",
    "run",
    "locate",
    "bench",
    "reconstruct",
    "synth",
    "index",
    "demo",
    "config",
]

app = typer.Typer(
    name="geolink-edge",
    help="Cross-view geo-localization for drones: train, export, index and fly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Cross-view geo-localization for drones: train, export, index and fly."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"geolink_edge.commands.{_name}").register(app)


# Typer may vendor its own click; accept both exception families.
_CLI_ERRORS = tuple({click.ClickException, getattr(typer, "TyperException", click.ClickException)})
_ABORTS = tuple({click.exceptions.Abort, typer.Abort})


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        result = app(args=argv, prog_name="geolink-edge", standalone_mode=False)
    except GeolinkError as exc:
        _fail(first_line(exc, limit=1000))
    except _ABORTS:
        _fail("aborted", 130)
    except _CLI_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            sys.exit(exc.exit_code)
        _fail(" ".join(exc.format_message().split()), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
