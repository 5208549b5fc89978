"""Every command's --help teaches by example (the README promises it): an `Examples:` block, or the group's own
flow, with commands that exist."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from merlin_mdm.cli.main import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*prefix, name)))
    return out


COMMANDS = _commands(cli)


def test_the_walk_finds_the_commands() -> None:
    assert {("run",), ("restart",), ("server", "start"), ("mdm", "eval")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_s_help_has_examples(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert any(word in result.output for word in ("Examples", "Typical flow", "Quick start")), result.output
    body = result.output.split("\n", 1)[1]  # past the usage line
    assert f"merlin-mdm {' '.join(path)} " in body, result.output
