"""The `cyphy` command line."""

from __future__ import annotations

import click

from cyphy import __version__
from cyphy.cli.flash import flash
from cyphy.cli.node import discover, get, monitor, plot, repl, set_
from cyphy.cli.sim import sim
from cyphy.cli.deploy import deploy
from cyphy.cli.provision import provision
from cyphy.cli.check import check


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cyphy")
def cli() -> None:
    """Flash, provision, debug and test ESP32 MicroPython control nodes, real or simulated."""


cli.add_command(sim)
cli.add_command(flash)
cli.add_command(deploy)
cli.add_command(provision)
cli.add_command(check)
for _cmd in (set_, get, monitor, plot, discover, repl):
    cli.add_command(_cmd)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(cyphy completion bash)"` in
    ~/.bashrc."""
    from click.shell_completion import get_completion_class

    comp = get_completion_class(shell)
    assert comp is not None
    click.echo(comp(cli, {}, "cyphy", "_CYPHY_COMPLETE").source())


def main() -> None:
    cli()
