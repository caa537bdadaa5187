"""What every cyphy command shares: exit codes, turning errors into one clear line, the
URL/key options of commands that talk to a node.

Every command runs inside `cyphy`'s group (cyphy.cli.CyphyGroup), which sends whatever a
command raises through `one_line()`: a user's mistake (no such file, a binary file, a
malformed URL, a node that is not running, a refusal...) becomes one line on stderr and an
exit code, never a traceback; anything unexpected becomes one line saying it is a bug and
to rerun with `cyphy --debug ...` (or CYPHY_DEBUG=1), which shows the traceback."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from typing import Any, Callable

import click

# Exit codes (docs/cli.md): 0 done; 1 could not (bad input, no node, link failure);
# 2 usage (click's); 3 the node refused (NACK: the reason is printed).
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_INTERRUPTED = 130   # Ctrl-C (128 + SIGINT, as shells report it)


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


class Interrupted(click.ClickException):
    """Ctrl-C: one line saying what state the node is left in (exit 130, as a shell does)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, state: str) -> None:
        super().__init__(f"interrupted: {state}")


class Rejected(click.ClickException):
    exit_code = EXIT_REJECTED


class BadUsage(click.ClickException):
    """A usage error shown as one line (no usage block): exit 2."""

    exit_code = EXIT_USAGE


class InternalError(click.ClickException):
    """Something cyphy did not expect: a bug. One line, and how to see the traceback."""

    exit_code = EXIT_FAILED


def debug_enabled() -> bool:
    """`cyphy --debug ...` or CYPHY_DEBUG=1 (set by the group for the commands)."""
    return os.environ.get("CYPHY_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _flat(text: str) -> str:
    """One line: the first non-empty line of a message (the rest, if any, is detail)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def os_error_text(e: OSError) -> str:
    """'PATH: No such file or directory' and what to do about it."""
    what = e.strerror or str(e)
    name = e.filename
    hint = {errno.ENOENT: "check the path",
            errno.EACCES: "check its permissions",
            errno.EPERM: "check its permissions",
            errno.EISDIR: "give a file, not a directory",
            errno.ENOTDIR: "a part of the path is not a directory",
            errno.ENOSPC: "free some space",
            errno.EROFS: "choose a writable place"}.get(e.errno or 0)
    where = f"{name}: " if name else ""
    return f"{where}{what}" + (f" ({hint})" if hint else "")


def one_line(e: BaseException) -> click.ClickException | None:
    """The ClickException a command's exception becomes; None for click's own exceptions
    and exits (let them through)."""
    if isinstance(e, (click.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                      SystemExit)):
        return None
    from cyphy.client import CommandRejected, ProtocolError
    from cyphy.links import LinkError

    if isinstance(e, CommandRejected):
        return Rejected(_flat(str(e)))
    if isinstance(e, (ProtocolError, LinkError)):
        return Failed(_flat(str(e)))
    known: list[type] = []
    for mod, names in (("cyphy.device", ("DeviceError",)), ("cyphy.sim.nodes", ("SimError",)),
                       ("cyphy.plot", ("PlotError",)), ("cyphy.keys", ("KeyStoreError",)),
                       ("cyphy.flash", ("FlashError",)), ("cyphy.provision", ("ProvisionError",)),
                       ("cyphy.firmware", ("FirmwareError",)), ("cyphy.mp32", ("Mp32Error",)),
                       ("cyphy.flashimage", ("FlashImageError",)),
                       ("cyphy.sim.speed", ("SpeedError",)), ("cyphy.chips", ("ChipConfigError",))):
        m = sys.modules.get(mod)  # a module never imported raised nothing of its own
        for n in names:
            cls = getattr(m, n, None) if m is not None else None
            if isinstance(cls, type):
                known.append(cls)
    if known and isinstance(e, tuple(known)):
        return Failed(_flat(str(e)))
    if isinstance(e, KeyboardInterrupt):
        return Failed("interrupted")
    if isinstance(e, UnicodeDecodeError):
        return Failed(f"a file is binary or not UTF-8 text ({e.reason} at byte {e.start}): "
                      f"give the text file the command expects")
    if isinstance(e, OSError):
        try:
            import serial

            if isinstance(e, serial.SerialException):
                return Failed(_flat(str(e)) + " (check the port: cyphy discover)")
        except ImportError:  # pragma: no cover
            pass
        return Failed(os_error_text(e))
    try:
        import serial

        if isinstance(e, serial.SerialException):
            return Failed(_flat(str(e)) + " (check the port: cyphy discover)")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(e, MemoryError):
        return Failed("out of memory")
    text = _flat(str(e))
    return InternalError(f"internal error: {type(e).__name__}{': ' + text if text else ''} "
                         f"(a bug in cyphy: rerun with `cyphy --debug ...` for the traceback "
                         f"and report it)")


def errors(fn: Callable) -> Callable:
    """Known errors become one line on stderr and an exit code, never a traceback. (The
    `cyphy` group does the same for every command; this keeps a command right when it is
    invoked on its own.)"""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except KeyboardInterrupt:
            raise  # the group's main() says it in one line, exit 130
        except Exception as e:
            exc = one_line(e)
            if exc is None:
                raise
            if debug_enabled():
                raise
            raise exc from None

    return wrapper


def _key_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--key-file must be a readable text file (the key in hex): one usage line else."""
    if value is None:
        return None
    try:
        with open(value, encoding="utf-8") as f:
            f.read(4096)
    except UnicodeDecodeError:
        raise click.BadParameter(f"{value}: a binary file, not a key (a key file holds the key "
                                 f"in hex)") from None
    except OSError as e:
        raise click.BadParameter(os_error_text(e)) from None
    return value


def key_options(fn: Callable) -> Callable:
    fn = click.option("--key-file", type=click.Path(dir_okay=False), callback=_key_file,
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


def table(headers: list[str], rows: list[list[str]], title: str = "",
          right: tuple[int, ...] = ()) -> str:
    """A table for people: rich's box on a terminal, aligned plain text otherwise (logs,
    pipes). right: the columns aligned right (numbers)."""
    if is_tty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title or None, title_justify="left")
        for i, h in enumerate(headers):
            t.add_column(h, justify="right" if i in right else "left")
        for r in rows:
            t.add_row(*r)
        c = Console()
        with c.capture() as cap:
            c.print(t)
        return cap.get().rstrip("\n")
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = ([title] if title else []) + [line(headers)] + [line(r) for r in rows]
    return "\n".join(out)
