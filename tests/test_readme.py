"""Every ``geolink-edge`` command README.md tells a newcomer to type exists, with every option it uses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    spans = re.findall(r"`(geolink-edge [^`]+)`", text) + re.findall(r"^(geolink-edge .+)$", text, re.M)
    return sorted({span.split(" > ")[0].strip() for span in spans})


def _resolve(words: list[str]):
    """The click command ``words`` name, and the words left (its arguments and options)."""
    import typer.main

    from geolink_edge.cli import app

    command = typer.main.get_command(app)
    while words and hasattr(command, "commands") and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_readme_names_commands():
    assert len(_commands()) >= 8


@pytest.mark.parametrize("line", _commands())
def test_every_readme_command_and_option_exists(line):
    command, rest = _resolve(shlex.split(line)[1:])
    assert not hasattr(command, "commands"), f"{line}: no such command"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = {word.split("=")[0] for word in rest if word.startswith("--")}
    assert used <= options, f"{line}: {sorted(used - options)} not options of {command.name}"
