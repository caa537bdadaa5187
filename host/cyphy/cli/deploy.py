"""`cyphy deploy`: sync the firmware tree to a node over its serial port."""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable, Iterator

import click

from cyphy.cli.common import Failed, emit, errors

PORT_HELP = "The node's serial port: /dev/ttyUSB0, serial:///dev/ttyUSB0 or sim://NAME."


def device_errors(fn: Callable) -> Callable:
    """Device, firmware and provisioning problems become one line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        from cyphy.device import DeviceError
        from cyphy.firmware import FirmwareError
        from cyphy.keys import KeyStoreError
        from cyphy.provision import ProvisionError

        try:
            return fn(*a, **kw)
        except (DeviceError, FirmwareError, ProvisionError, KeyStoreError) as e:
            raise Failed(str(e)) from None

    return errors(wrapper)


@contextlib.contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[Callable[[int, int, str], None] | None]:
    """A rich progress bar on stderr when it is a terminal; None (quiet) otherwise."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[path]}"),
                  console=Console(stderr=True), transient=True) as p:
        task = p.add_task(what, total=None, path="")

        def update(done: int, total: int, path: str) -> None:
            p.update(task, completed=done, total=total or None, path=path)

        yield update


def open_device(port: str, baud: int, soft_reset: bool = False):
    from cyphy.device import Device

    return Device.open(port, baud=baud, soft_reset=soft_reset)


SOFT_RESET_HELP = ("Soft-reset the node first (as mpremote does): every output goes to its fail-safe "
                   "value while boot.py rebuilds the node from its files, then the loops run again "
                   "(the watchdog keeps running across a soft reset, as on ESP32). Default: no "
                   "reset, the loops keep running.")


@click.command()
@click.option("-p", "--port", required=True, metavar="PORT", help=PORT_HELP)
@click.option("--target", type=click.Choice(["esp32", "sim"]),
              help="Board the firmware is for (default: detected from the node).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--force", is_flag=True, help="Send every file, changed or not.")
@click.option("--reset", is_flag=True,
              help="Hard-reset the node afterwards (machine.reset()) so main.py starts the new firmware.")
@click.option("--soft-reset", is_flag=True, help=SOFT_RESET_HELP)
@click.option("--baud", type=int, default=115200, show_default=True, help="Serial line rate.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@device_errors
def deploy(port: str, target: str | None, dry_run: bool, force: bool, reset: bool, soft_reset: bool,
           baud: int, as_json: bool) -> None:
    """Sync the firmware (cyphy.firmware: main.py, boot.py, cyphy_node and the board files,
    compiled to .mpy) to a node, sending only files whose SHA-256 differs. Each file is
    written to PATH.tmp and verified on the node; all are then renamed in one step, so a
    power loss leaves the old firmware whole. The node's loops keep running until --reset.

    Exit codes: 0 done, 1 failed (no port, not a MicroPython REPL, a transfer error), 2 usage,
    130 interrupted (Ctrl-C: one line says what the node holds)."""
    from cyphy.deploy import deploy as run
    from cyphy.deploy import interrupted

    state: dict = {}
    try:
        with progress_bar(not as_json, "deploy") as cb:
            with open_device(port, baud, soft_reset) as dev:
                report = run(dev, target=target, dry_run=dry_run, force=force, reset=reset,
                             progress=cb, state=state)
    except KeyboardInterrupt:
        # one line: what the node holds; its console is free (the transfer or exec was
        # ended on the node's side before the interrupt got here)
        click.echo(f"{port}: deploy interrupted: {interrupted(state)}", err=True)
        raise click.exceptions.Exit(130) from None
    emit(report, as_json, _text)


def _text(r: dict) -> str:
    lines = []
    verb = {"send": "would send" if r["dry_run"] else "sent", "delete": "would remove" if r["dry_run"] else "removed"}
    for f in r["files"]:
        if f["action"] == "skip":
            continue
        lines.append(f"{verb[f['action']]:<12} {f['path']}  ({f['bytes']} B, {f['reason']})")
    for d in r["removed_dirs"]:
        lines.append(f"{verb['delete']:<12} {d}/  (stale directory)")
    if r["dry_run"]:
        s = (f"{r['port']} ({r['target']}): would send {r['sent']} ({r['bytes'] / 1000:.1f} KB), "
             f"keep {r['skipped']}, remove {r['deleted']}; checked in {r['seconds']:.1f} s")
    else:
        s = (f"{r['port']} ({r['target']}): {r['sent']} sent, {r['skipped']} unchanged, "
             f"{r['deleted']} removed; {r['bytes'] / 1000:.1f} KB in {r['seconds']:.1f} s")
    if r["kb_per_s"]:
        s += f"; transfer {r['kb_per_s']:.1f} KB/s of file data"
        if r["line_kb_per_s"] and r["transfer_seconds"]:
            use = r["wire_bytes"] / r["transfer_seconds"] / 1000 / r["line_kb_per_s"]
            s += (f" ({100 * r['kb_per_s'] / r['line_kb_per_s']:.0f}% of the {r['line_kb_per_s']:.2f} KB/s "
                  f"line rate, compressed; line {100 * use:.0f}% busy)")
    if r["dry_run"]:
        s += "; dry run: nothing written"
    if r["reset"]:
        s += "; node reset"
    lines.append(s)
    lines += [f"  {b}" for b in r.get("boot", [])]
    return "\n".join(lines)
