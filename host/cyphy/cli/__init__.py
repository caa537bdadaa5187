"""The `cyphy` command line."""

from __future__ import annotations

import click

from cyphy import __version__
from cyphy.cli.sim import sim


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cyphy")
def cli() -> None:
    """Flash, provision, debug and test ESP32 MicroPython control nodes, real or simulated."""


cli.add_command(sim)


def main() -> None:
    cli()
