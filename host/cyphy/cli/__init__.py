"""The `cyphy` command line.

Errors are handled here, once for every command (CyphyGroup): whatever a command raises
becomes one line on stderr (cyphy.cli.common.one_line) and an exit code; a usage error is
one line too (what is wrong, and the command's --help). `cyphy --debug ...` (or
CYPHY_DEBUG=1) also prints the traceback."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from cyphy import __version__
from cyphy.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, debug_enabled, one_line

# Each command's line in `cyphy --help` (click would cut a docstring at its first period,
# "e.g." included). A command's own short_help wins.
SHORT_HELP = {
    "check": "Will a config run on a chip: pins, RAM and CPU, before flashing.",
    "completion": "Print the shell completion script for bash, zsh or fish.",
    "deploy": "Sync the compiled firmware to a node; only changed files go.",
    "discover": "Find nodes: USB-UART bridges, sim nodes, nodes on UDP.",
    "flash": "Write MicroPython, the partition table and a config to a board.",
    "get": "Read a parameter, a loop's state, state, stats, faults or info.",
    "monitor": "A live table of every loop's telemetry, optionally to CSV.",
    "plot": "Draw a `cyphy monitor --csv` recording as a PNG.",
    "provision": "Give a node its name, config, key and Wi-Fi credentials.",
    "repl": "A terminal on a node's REPL; the node is not reset.",
    "set": "Set setpoints, gains, modes: all applied, or none.",
    "sim": "Run simulated nodes (the sim board) on this machine.",
}


def _debug_from_argv(args: list[str]) -> bool:
    """--debug given before the command (the group's option), seen before click parses."""
    for a in args:
        if a == "--debug":
            return True
        if not a.startswith("-"):
            return False
    return False


def _print_chain(e: BaseException) -> None:
    """The traceback of e and of what it was raised from, even `from None`."""
    cur: BaseException | None = e
    while cur is not None:
        cur.__suppress_context__ = False
        cur = cur.__context__
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)


class CyphyGroup(click.Group):
    """click.Group whose commands never show a traceback for a user's mistake, and whose
    usage errors are one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            # A command's own one-line error: with --debug, what it was made from.
            if debug_enabled() and e.__context__ is not None:
                _print_chain(e.__context__)
            raise
        except Exception as e:  # noqa: BLE001 - every command's errors, once
            exc = one_line(e)
            if exc is None:
                raise
            if debug_enabled():
                _print_chain(e)
            raise exc from None
        except KeyboardInterrupt:
            raise  # main() says it in one line, exit 130

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for cmd in self.commands.values():
            if cmd.short_help is None and cmd.name in SHORT_HELP:
                cmd.short_help = SHORT_HELP[cmd.name]
        super().format_commands(ctx, formatter)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if _debug_from_argv(argv):
            os.environ["CYPHY_DEBUG"] = "1"
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(argv, prog_name or "cyphy", complete_var, False, **extra)
        except click.UsageError as e:
            # One line: what is wrong and where to read how (instead of click's usage block).
            hint = f"{e.ctx.command_path} --help" if e.ctx is not None else "cyphy --help"
            msg = " ".join(e.format_message().split())
            click.echo(f"Error: {msg} (see: {hint})", err=True)
            sys.exit(e.exit_code if e.exit_code else EXIT_USAGE)
        except click.ClickException as e:
            click.echo(f"Error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):  # click's main() wraps Ctrl-C
                _interrupted()
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except EOFError:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _interrupted()
        except OSError as e:
            import errno

            if e.errno == errno.EPIPE:  # stdout closed early (`cyphy ... | head`)
                try:
                    sys.stdout = open(os.devnull, "w")
                except OSError:
                    pass
                sys.exit(1)
            raise
        if isinstance(rv, int):
            sys.exit(rv)
        sys.exit(0)


def _interrupted() -> None:
    # Commands that change a node say what state they leave it in themselves (flash,
    # deploy, provision); anything else stopped where it was.
    click.echo("Error: interrupted (Ctrl-C)", err=True)
    sys.exit(EXIT_INTERRUPTED)


@click.group(cls=CyphyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cyphy")
@click.option("--debug", is_flag=True, envvar="CYPHY_DEBUG",
              help="On an error, also print the Python traceback (or set CYPHY_DEBUG=1).")
def cli(debug: bool) -> None:
    """Flash, provision, debug and test ESP32 MicroPython control nodes, real or simulated.

    A user's mistake is one line on stderr (exit 1, 2 usage, 3 the node refused);
    `cyphy --debug COMMAND ...` also prints the traceback."""
    if debug:
        os.environ["CYPHY_DEBUG"] = "1"


from cyphy.cli.flash import flash  # noqa: E402
from cyphy.cli.node import discover, get, monitor, plot, repl, set_  # noqa: E402
from cyphy.cli.sim import sim  # noqa: E402
from cyphy.cli.deploy import deploy  # noqa: E402
from cyphy.cli.provision import provision  # noqa: E402
from cyphy.cli.check import check  # noqa: E402
from cyphy.cli.tune import tune  # noqa: E402
from cyphy.cli.gateway import gateway  # noqa: E402

cli.add_command(sim)
cli.add_command(flash)
cli.add_command(deploy)
cli.add_command(provision)
cli.add_command(check)
cli.add_command(tune)
cli.add_command(gateway)
for _cmd in (set_, get, monitor, plot, discover, repl):
    cli.add_command(_cmd)


@cli.command(short_help=SHORT_HELP["completion"])
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL; add
    `eval "$(cyphy completion bash)"` to ~/.bashrc (zsh, fish alike)."""
    from click.shell_completion import get_completion_class

    comp = get_completion_class(shell)
    assert comp is not None
    click.echo(comp(cli, {}, "cyphy", "_CYPHY_COMPLETE").source())


def main() -> None:
    cli()
