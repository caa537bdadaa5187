"""`cyphy sim ...`: simulated nodes that real tools treat as ESP32 boards."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cyphy.sim import control
from cyphy.sim.nodes import CHIP_NAMES, Node, SimError, parse_heap


def _fail(e: Exception) -> None:
    # one line: a message's first line (a boot failure's log tail is in the node's log)
    raise click.ClickException(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))


@click.group(short_help="Run simulated nodes (the sim board) on this machine.")
def sim() -> None:
    """Run simulated nodes (the sim board) on this machine: start, stop, list, erase,
    delete."""


@sim.command(short_help="Power on node NAME; prints its serial port last.")
@click.argument("name")
@click.option("--baud", type=int, default=115200, show_default=True,
              help="Emulated UART line rate (8N1); 0 turns line-rate emulation off.")
@click.option("--heap", default=None, metavar="SIZE",
              help="A PSRAM node's MicroPython heap (--psram): bytes, or with K or M (110000, 512K, "
                   "2M); default 512K. 192K is about the least the sim boots in. A WROOM node has "
                   "the chip's heap.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=control.START_TIMEOUT_S, show_default=True,
              help="Seconds to wait for the node's REPL.")
@click.option("--ticks-start", type=int, default=0, show_default=True,
              help="time.ticks_us() at power-on (ESP32 ticks wrap at 2**30 us); set it just "
                   "below 1073741824 to test code across the wrap-around.")
@click.option("--virtual-time", is_flag=True,
              help="Time moves only while the node sleeps, as fast as the host can go: "
                   "deterministic, for tests.")
@click.option("--bench", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file: the plant and how the board's pins are wired to it (kept "
                   "with the node for later starts).")
@click.option("--download", is_flag=True,
              help="Power on in ESP32's serial download mode (as with GPIO0 held low): the ROM "
                   "loader answers esptool (write-flash, read-flash, erase-flash, ...) on the "
                   "node's flash image instead of booting MicroPython. The port has no DTR/RTS: "
                   "run esptool with --before no-reset (and --after no-reset, or --no-stub "
                   "--after soft-reset to boot the new flash).")
@click.option("--chip", type=click.Choice(CHIP_NAMES), default=None, metavar="CHIP",
              help="esp32, esp32s3 or esp32c3: the node's chip, its pins and their functions, ADC, DAC (esp32 only), PWM "
                   "limits and timers (boards/esp32/pins.py), and what esptool detects. Kept "
                   "with the node; a new node is an esp32.")
@click.option("--speed", type=click.Choice(["host", "chip"]), default="host", show_default=True,
              help="chip: the node's soft callbacks (control pass, protocol service) take as long "
                   "as on the chip (calibrated, cyphy.sim.speed), so a loop that does not fit its "
                   "period on an ESP32 shows overruns; host: the host's full speed. Either way "
                   "`cyphy get URL stats` reports compute time in chip microseconds.")
@click.option("--wroom/--psram", "wroom", default=None,
              help="The board's memory: --wroom an ESP32-WROOM without PSRAM (the chip's heap, "
                   "111,936 B on an ESP32, on a 32-bit MicroPython with the firmware frozen in, "
                   "as such a board needs it; --heap does not apply), --psram an ESP32 with "
                   "PSRAM (--heap). Kept with the node; a new node is a WROOM.")
def start(name: str, baud: int, heap: str | None, timeout: float, ticks_start: int, virtual_time: bool,
          bench: Path | None, download: bool, chip: str | None, speed: str, wroom: bool | None) -> None:
    """Power on node NAME in the background; prints its serial port last.

    If it does not boot, one line says why; the node's supervisor.log has the details
    (cyphy sim list --json: its directory)."""
    try:
        Node.named(name)  # the name first: nothing is created for a bad one
        if heap is not None:
            parse_heap(heap)
        if bench is not None:
            control.load_bench(bench)  # before --chip creates the node
        log = Node.named(name).supervisor_log
        log_at = log.stat().st_size if log.exists() else 0
        if chip is not None:
            node = Node.named(name)
            if node.state() is None:
                node.create()
            node.set_chip(chip)  # refused while it runs as another chip
        st = control.start(name, baud=baud, heap=heap, timeout=timeout, ticks_start=ticks_start,
                           virtual_time=virtual_time, bench=bench, download=download, speed=speed,
                           ram=None if wroom is None else "wroom" if wroom else "psram")
    except SimError as e:
        first = str(e).strip().splitlines()[0]
        if "did not boot" in first:
            # Only this boot's story: what the supervisor said (never an earlier boot's lines).
            why = first.split("did not boot:", 1)[1].strip()
            why = why[len("error "):] if why.startswith("error ") else why
            if why.startswith("timed out"):
                why = (f"its REPL did not answer within --timeout {timeout:g} s; powered off again "
                       f"(a longer --timeout, or see what it printed this boot in {log} after "
                       f"byte {log_at})")
            else:
                why += f" (details: {log})"
            _fail(SimError(f"node {name} did not boot: {why}"))
        _fail(e)
    if st.get("already_running"):
        click.echo(f"node {name} is already running (pid {st['pid']})")
    elif download:
        click.echo(f"node {name} is in download mode ({_mcu(name)} ROM loader), pid {st['pid']}, "
                   f"{st['baud'] or 'unlimited'} baud; esptool needs --before no-reset")
    else:
        ram = ", no PSRAM" if Node.named(name).ram() == "wroom" else " with PSRAM"
        click.echo(f"node {name} ({_mcu(name)}{ram}) booted ({st.get('boot', 'REPL answering')}), pid {st['pid']}, "
                   f"{st['baud'] or 'unlimited'} baud")
    click.echo(st["port"])


def _mcu(name: str) -> str:
    from cyphy import chips

    return chips.chip(Node.named(name).chip())["mcu"]


@sim.command(short_help="Power off node NAME; its flash is kept.")
@click.argument("name")
def stop(name: str) -> None:
    """Power off node NAME (its flash image is kept)."""
    try:
        if not control.stop(name):
            click.echo(f"node {name} was not running")
    except SimError as e:
        _fail(e)


@sim.command(short_help="Erase the flash of stopped node NAME.")
@click.argument("name")
def erase(name: str) -> None:
    """Erase the flash of stopped node NAME; it formats a fresh filesystem at next start."""
    try:
        control.erase(name)
    except SimError as e:
        _fail(e)
    click.echo(f"node {name}: flash erased")


@sim.command(short_help="Delete node NAME: its flash, bench and logs.")
@click.argument("name")
@click.option("--force", is_flag=True, help="Power it off first if it is running.")
def delete(name: str, force: bool) -> None:
    """Delete sim node NAME for good: its identity (MAC, IP), flash image, bench and logs.
    A running node is refused unless --force, which powers it off first. Keys that `cyphy
    provision` kept for the name it was given stay in $CYPHY_HOME/keys."""
    from cyphy.sim.nodes import delete as delete_node

    try:
        if not delete_node(Node.named(name), force=force):
            raise SimError(f"no sim node named {name!r} (see: cyphy sim list)")
    except SimError as e:
        _fail(e)
    click.echo(f"node {name}: deleted")


@sim.command("list", short_help="List sim nodes and their serial ports.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List sim nodes and their serial ports."""
    rows = control.listing()
    for r in rows:
        r["chip"] = Node.named(r["name"]).chip()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no sim nodes (start one with: cyphy sim start NAME)")
        return
    for r in rows:
        state = f"running  {r['port']}" if r["running"] else "stopped"
        click.echo(f"{r['name']:<20} {state}")
