"""What every cyphy command shares: exit codes, turning errors into one clear line, the
URL/key options of commands that talk to a node."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

# Exit codes (docs/cli.md): 0 done; 1 could not (bad input, no node, link failure);
# 2 usage (click's); 3 the node refused (NACK: the reason is printed).
EXIT_FAILED = 1
EXIT_REJECTED = 3


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


class Rejected(click.ClickException):
    exit_code = EXIT_REJECTED


def errors(fn: Callable) -> Callable:
    """Known errors become one line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        from cyphy.client import CommandRejected, ProtocolError
        from cyphy.links import LinkError

        try:
            return fn(*a, **kw)
        except CommandRejected as e:
            raise Rejected(str(e)) from None
        except (ProtocolError, LinkError) as e:
            raise Failed(str(e)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None

    return wrapper


def key_options(fn: Callable) -> Callable:
    fn = click.option("--key-file", type=click.Path(dir_okay=False),
                      help="The node's key (hex). Default: $CYPHY_KEY, $CYPHY_KEY_FILE, or "
                           "the key `cyphy provision` kept for the node's name.")(fn)
    return fn


def unprovisioned_option(fn: Callable) -> Callable:
    return click.option("--unprovisioned", is_flag=True,
                        help="Talk to the node even if it is unauthenticated (has no key) while this "
                             "host holds a key for its name. Only for a node you know is not "
                             "provisioned yet: anyone on the link can send unauthenticated frames.")(fn)


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=None) if as_json else text(data))


def is_tty() -> bool:
    return sys.stdout.isatty()
