"""``geolink-edge config show run``: the runtime's settings and their defaults, as YAML to edit."""

from __future__ import annotations

import typer

config_app = typer.Typer(help="The runtime's settings as YAML.", no_args_is_help=True)


@config_app.command("show")
def show(
    name: str = typer.Argument("run", help="run (the file --config reads), locate, verify or filter"),
) -> None:
    """Print the defaults of one config as YAML, a comment on every field."""
    from geolink_edge.registry import choose
    from geolink_edge.runtime import conf_yaml

    cls = choose("config", name, conf_yaml.conf_classes())
    where = "the file run, locate and bench --config read" if name == "run" else "a part of config show run"
    typer.echo(conf_yaml.show(cls, f"{cls.__name__} defaults ({where})"), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
