"""Commands that talk to a running node over the protocol: set, get, monitor, discover."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import click

from cyphy.cli.common import EXIT_FAILED, emit, errors, key_options, unprovisioned_option

URL_HELP = "serial:///dev/ttyUSB0, udp://HOST[:PORT], sim://NAME (or a /dev path)"


def _connect(url: str, key_file: str | None, unprovisioned: bool):
    from cyphy.api import connect

    return connect(url, key_file=key_file, unprovisioned=unprovisioned)


def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # a mode: auto / manual


@click.command("set")
@click.argument("url", metavar="URL")
@click.argument("assignments", nargs=-1, required=True, metavar="LOOP.KEY=VALUE...")
@key_options
@unprovisioned_option
@errors
def set_(url: str, assignments: tuple[str, ...], key_file: str | None, unprovisioned: bool) -> None:
    """Set setpoints, gains and modes, e.g. `cyphy set sim://oven oven.setpoint=60
    oven.mode=auto`. Each is acknowledged by the node; a refusal prints why (exit 3).
    Keys: setpoint, mode (auto|manual), kp, ki, kd, output (manual output)."""
    pairs = []
    for a in assignments:
        path, eq, value = a.partition("=")
        if not eq or "." not in path:
            raise click.BadParameter(f"{a!r}: write LOOP.KEY=VALUE, e.g. oven.setpoint=60",
                                     param_hint="assignments")
        pairs.append((path, _value(value)))
    with _connect(url, key_file, unprovisioned) as n:
        for path, value in pairs:
            n.set(path, value)
            click.echo(f"{path} = {value}: acknowledged")


@click.command("get")
@click.argument("url", metavar="URL")
@click.argument("path", metavar="LOOP.KEY")
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON.")
@key_options
@unprovisioned_option
@errors
def get(url: str, path: str, as_json: bool, key_file: str | None, unprovisioned: bool) -> None:
    """Read a parameter: LOOP.KEY (oven.measurement), a loop name (its whole state), or
    state, stats, faults, info."""
    with _connect(url, key_file, unprovisioned) as n:
        v = n.get(path)
    emit(v, as_json, lambda v: "\n".join(f"{k}: {x}" for k, x in v.items()) if isinstance(v, dict) else str(v))


CSV_FIELDS = ("host_time", "t_ms", "loop", "setpoint", "measurement", "output", "mode",
              "alarms", "faults")


@click.command()
@click.argument("url", metavar="URL")
@click.option("--period-ms", type=click.IntRange(1, 60000), default=100, show_default=True,
              help="Telemetry period.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Record every sample to this CSV file (cyphy plot draws it).")
@click.option("--seconds", type=float, help="Stop after this long (default: until Ctrl-C).")
@key_options
@unprovisioned_option
@errors
def monitor(url: str, period_ms: int, csv_path: Path | None, seconds: float | None,
            key_file: str | None, unprovisioned: bool) -> None:
    """A live table of every loop: setpoint, measurement, output, mode, alarms, faults,
    jitter (p99 of the loop's period) and link quality (frames lost, rejected)."""
    from cyphy.client import status_names
    from cyphy.monitor import LiveTable

    with _connect(url, key_file, unprovisioned) as n:
        table = LiveTable(n)
        writer = None
        f = None
        if csv_path is not None:
            f = csv_path.open("w", newline="")
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
        end = None if seconds is None else time.monotonic() + seconds
        try:
            with table:
                for sample in n.telemetry(period_ms=period_ms):
                    now = time.time()
                    for name, v in sample["loops"].items():
                        st = status_names(v["status"])
                        if writer is not None:
                            writer.writerow([f"{now:.3f}", sample["t_ms"], name, v["setpoint"],
                                             v["measurement"], v["output"], st["mode"],
                                             "|".join(st["alarms"]), "|".join(st["faults"])])
                    table.update(sample)
                    if end is not None and time.monotonic() >= end:
                        break
        except KeyboardInterrupt:
            pass
        finally:
            if f is not None:
                f.close()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the nodes found as JSON.")
@click.option("--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for UDP answers.")
@click.option("--udp-port", type=int, default=5477, show_default=True)
@key_options
@errors
def discover(as_json: bool, timeout: float, udp_port: int, key_file: str | None) -> None:
    """Find nodes: serial ports with an ESP32 USB-UART bridge, running sim nodes, and nodes
    answering on UDP (by broadcast)."""
    from cyphy.api import resolve_key
    from cyphy.discovery import discover_udp, serial_ports, sim_nodes

    key = resolve_key(None, key_file)
    found = {"serial": serial_ports(), "sim": sim_nodes(),
             "udp": [f.as_dict() for f in discover_udp(timeout=timeout, port=udp_port, key=key)]}

    def text(d: dict) -> str:
        lines = []
        for p in d["serial"]:
            lines.append(f"serial  {p['url']:<38} {p['description']} ({p['bridge']})")
        for s in d["sim"]:
            lines.append(f"sim     {s['url']:<38} tty {s['tty']}  ip {s['ip']}")
        for u in d["udp"]:
            ok = {True: "key ok", False: "key WRONG", None: "unverified"}[u["verified"]]
            lines.append(f"udp     {u['url']:<38} {u['name']} ({u['board']}, {u['firmware']}), "
                         f"loops {', '.join(u['loops'])}, {ok}")
        return "\n".join(lines) if lines else "no nodes found"

    emit(found, as_json, text)
    if not any(found.values()):
        raise SystemExit(EXIT_FAILED)


@click.command()
@click.argument("port", metavar="PORT")
@click.option("--baud", type=int, default=115200, show_default=True)
@errors
def repl(port: str, baud: int) -> None:
    """An interactive REPL on PORT (a /dev path, serial://..., or sim://NAME). The node is
    not reset and its loops keep running. Ctrl-] leaves."""
    from cyphy import terminal
    from cyphy.links import serial_device

    dev = serial_device(port)
    click.echo(f"cyphy repl: {port} (Ctrl-] leaves; the node is not reset)", err=True)
    terminal.run(dev, baud)
    click.echo("\ncyphy repl: left", err=True)


@click.command()
@click.argument("recording", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The PNG to write (default: the recording's name with .png).")
@errors
def plot(recording: Path, output: Path | None) -> None:
    """Draw a recording from `cyphy monitor --csv` as a PNG: setpoint and measurement,
    and output, per loop."""
    from cyphy.plot import PlotError, plot_recording

    png = output or recording.with_suffix(".png")
    try:
        loops = plot_recording(recording, png)
    except PlotError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{png}: {len(loops)} loop(s): {', '.join(loops)}")
