"""`cyphy flash`: MicroPython, the partition table and the cyphy filesystem, with esptool."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Iterator

import click

from cyphy.cli.common import Failed, Interrupted, emit, errors


class UsageFailed(click.ClickException):
    """A usage error in one line (exit 2)."""

    exit_code = 2


def again() -> str:
    """The command line this process runs, to run it again."""
    import shlex

    return "cyphy " + shlex.join(sys.argv[1:])


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Cleanup that must finish (a sim node powered back on): SIGINT waits meanwhile."""
    try:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hold
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


BEFORE = ["default-reset", "usb-reset", "no-reset", "no-reset-no-sync"]
AFTER = ["hard-reset", "soft-reset", "no-reset", "no-reset-stay", "watchdog-reset"]


@click.command()
@click.option("--port", required=True, help="/dev/ttyUSB0, serial:///dev/ttyUSB0, or sim://NAME "
                                            "(restarted in its ROM's download mode for the write).")
@click.option("--firmware", type=click.Path(dir_okay=False, path_type=Path),
              help="MicroPython's ESP32 .bin (as published, for 0x1000). Without it only the "
                   "partition table and the filesystem are written (MicroPython already there).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The node's config (JSON, checked before anything is written).")
@click.option("--name", help="The node's name (set in the config).")
@click.option("--no-erase", is_flag=True, help="Write without erasing the whole chip first (the "
                                               "filesystem partition is rewritten all the same).")
@click.option("--baud", type=click.IntRange(min=1), default=None,
              help="esptool's baud rate for the write (default 460800). Serial ports only: a "
                   "sim node's download mode sets its own.")
@click.option("--before", type=click.Choice(BEFORE), default=None,
              help="esptool's reset before (default-reset; a board without auto-reset: "
                   "no-reset). Serial ports only: cyphy resets a sim node itself.")
@click.option("--after", type=click.Choice(AFTER), default=None,
              help="esptool's reset after (hard-reset). Serial ports only: a sim node is "
                   "powered up normally afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@errors
def flash(port: str, firmware: Path | None, config_path: Path | None, name: str | None,
          no_erase: bool, baud: int | None, before: str | None, after: str | None, as_json: bool) -> None:
    """Write MicroPython, the partition table and a filesystem with the cyphy firmware
    (compiled to .mpy) and the config, then verify (esptool: chip detection, erase,
    write, MD5). Keys and Wi-Fi come after, with `cyphy provision`.

    The node's filesystem is replaced whole (and the whole chip erased unless --no-erase):
    its key (/secrets.json), its persisted tuning (/autotune.json) and its config go, as
    with esptool write-flash. It is said as esptool begins to erase or write, and the
    output ends with what to run next.

    Ctrl-C stops at once and says what state the node is left in (untouched, or blank
    and the command to run again). Exit codes: 0 done, 1 failed, 2 usage, 130 interrupted."""
    from cyphy.flash import FlashError, FlashInterrupted, flash as do_flash, plan
    from cyphy.provision import ProvisionError, check_config, load_config_file

    sim = port.startswith("sim://")
    if sim:
        given = [f"--{o}" for o, v in (("baud", baud), ("before", before), ("after", after))
                 if v is not None]
        if given:
            raise UsageFailed(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply "
                              f"to {port}: cyphy puts a sim node in download mode, writes it and "
                              f"powers it up itself; leave {'it' if len(given) == 1 else 'them'} out")
    try:
        cfg = None
        if config_path is not None:
            cfg = check_config(load_config_file(str(config_path)), name)
        elif name:
            from cyphy.provision import minimal_config
            cfg = check_config(minimal_config(name), None)
        parts = plan(firmware, cfg, "sim" if sim else "esp32")  # every check before the node
        with _progress() as cb:
            if sim:
                report = _flash_sim(port[len("sim://"):].strip("/"), parts, not no_erase, cb)
            else:
                dev = port[len("serial://"):] if port.startswith("serial://") else port
                try:
                    from cyphy.flash import write

                    report = write(dev, parts, not no_erase, before or "default-reset",
                                   after or "hard-reset", baud or 460800, cb,
                                   on_touch=lambda: _say_erase(port, not no_erase, None))
                except FlashInterrupted as e:
                    raise Interrupted(_interrupted_state(port, e.touched, False)) from None
    except (FlashError, ProvisionError) as e:
        raise Failed(str(e)) from None
    except KeyboardInterrupt:
        raise Interrupted(f"nothing was written; {port} is as it was") from None
    from cyphy.flash import NODE_FILES

    report["erases"] = [p for p, _ in NODE_FILES]
    report["next"] = _next(port, cfg, report.get("old_name"))
    emit(report, as_json, _text)


def _interrupted_state(port: str, touched: bool, rom_loader: bool) -> str:
    if not touched:
        return f"esptool had not begun to write: {port} is as it was"
    where = ("it waits in its ROM loader (download mode)" if rom_loader
             else "the board stays in its ROM loader until reset")
    return (f"esptool was writing: {port}'s flash is blank or partly written and boots nothing "
            f"({where}); run `{again()}` again")


def _say_erase(port: str, erase: bool, present: list[str] | None) -> None:
    """As esptool begins to erase or write: what that takes away (stderr, so that --json
    stays clean)."""
    from cyphy.flash import NODE_FILES

    files = [f"{what} ({p})" for p, what in NODE_FILES if present is None or p in present]
    how = "erasing the whole flash" if erase else "rewriting the filesystem partition"
    if files:
        gone = ", ".join(files[:-1]) + (" and " if len(files) > 1 else "") + files[-1]
        lost = f"the node loses {gone}" + ("" if present is not None else ", if it has them")
    else:
        lost = "the node had no key, tuning or config to lose"
    click.echo(f"flash: {port}: {how}: {lost}; `cyphy provision` gives it a key afterwards", err=True)


def _next(port: str, cfg: dict | None, old_name: str | None) -> str:
    name = (cfg or {}).get("name") or old_name
    if cfg is not None:
        return f"cyphy provision --port {port} --reset"
    if name:
        return f"cyphy provision --port {port} --name {name} --config CONFIG --reset"
    return f"cyphy provision --port {port} --name NAME --config CONFIG --reset"


def _flash_sim(name: str, parts: list, erase: bool, cb) -> dict:
    # A sim node has no DTR/RTS to reset it into its ROM loader: cyphy does that part, and
    # powers it up normally afterwards, or, when the write did not complete, leaves it in
    # its ROM loader (what a real ESP32 does), where the next `cyphy flash` finds it.
    from cyphy import flashimage
    from cyphy.flash import NODE_FILES, FlashError, FlashInterrupted, write
    from cyphy.sim import control
    from cyphy.sim.nodes import Node, SimError

    port = f"sim://{name}"
    touched = False
    try:
        node = Node.named(name)
        st = node.state()
        if st is None:
            raise FlashError(f"sim node {name!r} is not running (cyphy sim start {name})")
        baud = int(st.get("baud", 115200))
        # powered up again as it ran: its line rate, clock and speed (its bench stays installed)
        again_as = {"virtual_time": bool(st.get("virtual_time")), "speed": st.get("speed") or "host"}
        report = None
        try:
            control.stop(name)
            present, old_name = None, None
            try:
                files = flashimage.read_vfs(node.image)
                present = [p for p, _ in NODE_FILES if p in files]
                import json

                old_name = json.loads(files["/config.json"]).get("name") if "/config.json" in files else None
            except Exception:  # noqa: BLE001 - blank or foreign flash: nothing to say about it
                present = []
            st = control.start(name, baud=baud, download=True)
            try:
                report = write(st["port"], parts, erase, "no-reset", "no-reset", 460800, cb,
                               on_touch=lambda: _say_erase(port, erase, present))
            except FlashInterrupted as e:
                touched = e.touched
                raise Interrupted(_interrupted_state(port, e.touched, True)) from None
            except FlashError:
                touched = True
                raise
        except KeyboardInterrupt:
            raise Interrupted(f"nothing was written; {port} is as it was (powered up again)") from None
        finally:
            with sigint_held():
                control.stop(name)
                if touched and report is None:
                    st = control.start(name, baud=baud, download=True)
                else:
                    st = control.start(name, baud=baud, **again_as)  # boots MicroPython from its flash
    except SimError as e:
        raise FlashError(str(e)) from None
    report["port"] = port
    report["booted"] = st.get("port")
    report["old_name"] = old_name
    return report


class _progress:
    """A rich bar on a terminal (stderr), nothing otherwise."""

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>5.1f} %"), console=Console(stderr=True),
                          transient=True)
        self.p.__enter__()
        self.task = self.p.add_task("flash", total=100)
        return lambda what, pct: self.p.update(self.task, description=what, completed=pct)

    def __exit__(self, *exc):
        if hasattr(self, "p"):
            self.p.__exit__(*exc)


def _text(r: dict) -> str:
    lines = [f"{r['port']}: {r.get('chip') or 'ESP32'}, MAC {r.get('mac') or '?'}"]
    for g in r["regions"]:
        lines.append(f"  {g['offset']:#08x}  {g['bytes']:>8} bytes  {g['what']}")
    lines.append("verified (MD5)" + (", erased first" if r["erased"] else ""))
    lines.append(f"the node has no key now: next, `{r['next']}`")
    return "\n".join(lines)
