"""Commands that talk to a running node over the protocol: set, get, monitor, discover,
repl; and plot (a monitor recording)."""

from __future__ import annotations

import csv
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cyphy.cli.common import (EXIT_FAILED, BadUsage, Failed, emit, errors, key_options, table,
                              unprovisioned_option)

URL_HELP = ("serial:///dev/ttyUSB0, udp://HOST[:PORT], sim://NAME (or a /dev path), "
            "mqtt[s]://HOST[:PORT]/GROUP/EDGE/DEVICE (through a gateway)")

NUMERIC_KEYS = ("setpoint", "kp", "ki", "kd", "output")
# Which of a loop's channels a state key is in: the sensor's units or the actuator's.
UNIT_OF = {"setpoint": "measurement", "measurement": "measurement",
           "working_setpoint": "measurement", "output": "output"}


def _connect(url: str, key_file: str | None, unprovisioned: bool, timeout: float = 2.0):
    from cyphy.api import connect

    return connect(url, key_file=key_file, unprovisioned=unprovisioned, timeout=timeout)


def _value(assignment: str, key: str, text: str) -> float | str:
    """An assignment's value: a finite number, or auto/manual for mode (usage error else)."""
    text = text.strip()
    if key == "mode":
        if text not in ("auto", "manual"):
            raise BadUsage(f"{assignment!r}: mode is auto or manual, e.g. oven.mode=auto")
        return text
    if not text:
        raise BadUsage(f"{assignment!r}: no value after '=': write LOOP.KEY=VALUE, e.g. "
                       f"oven.setpoint=60")
    try:
        v = float(text)
    except ValueError:
        if key in NUMERIC_KEYS:
            raise BadUsage(f"{assignment!r}: {text!r} is not a number: {key} takes a number, "
                           f"e.g. oven.{key}=60") from None
        return text  # an unknown key: the refusal names the keys there are
    if not math.isfinite(v):
        raise BadUsage(f"{assignment!r}: {text!r} is not a finite number")
    return v


def units_of(info: Any) -> dict[str, dict[str, str]]:
    """{loop: {"measurement": "degC", "output": "%"}} from a node's info; {} from a node
    that does not say (older firmware)."""
    u = info.get("units") if isinstance(info, dict) else None
    if not isinstance(u, dict):
        return {}
    out = {}
    for loop, d in u.items():
        if isinstance(d, dict):
            out[str(loop)] = {k: str(d.get(k) or "") for k in ("measurement", "output")}
    return out


def node_units(n: Any) -> dict[str, dict[str, str]]:
    """The node's units, or {} if it cannot say (never an error: units are a nicety)."""
    from cyphy.client import ProtocolError
    from cyphy.links import LinkError

    try:
        return units_of(n.get("info"))
    except (ProtocolError, LinkError):
        return {}


def with_unit(value: Any, unit: str | None) -> str:
    text = num(value)
    return f"{text} {unit}" if unit and isinstance(value, (int, float)) \
        and not isinstance(value, bool) else text


def num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(num(x) for x in v) or "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {num(x)}" for k, x in v.items()) or "-"
    return str(v)


@click.command("set", short_help="Set setpoints, gains, modes: all applied, or none.")
@click.argument("url", metavar="URL")
@click.argument("assignments", nargs=-1, required=True, metavar="LOOP.KEY=VALUE...")
@click.option("--save", is_flag=True,
              help="Also persist them on the node (setpoints and gains): in force after a "
                   "reboot, over the config's values.")
@key_options
@unprovisioned_option
@errors
def set_(url: str, assignments: tuple[str, ...], save: bool, key_file: str | None,
         unprovisioned: bool) -> None:
    """Set setpoints, gains and modes, for example
    `cyphy set sim://oven oven.setpoint=60 oven.mode=auto`.

    All the assignments go to the node in one command and are applied together, between
    two control passes, or none is: a refusal names the one refused and why (exit 3) and
    nothing was changed. Keys: setpoint, mode (auto|manual), kp, ki, kd, output (manual
    output), in the config's units. A block's parameter (BLOCK.PARAM=VALUE, e.g.
    mix.ratio=1.5: docs/config.md, "Blocks and tasks") is set on its own. A change lasts until the node resets; with --save it
    is persisted (config < persisted < runtime: docs/control.md); `cyphy tune --clear URL
    LOOP` forgets what was persisted."""
    pairs: list[tuple[str, float | str]] = []
    for a in assignments:
        path, eq, value = a.partition("=")
        loop, dot, key = path.strip().partition(".")
        if not eq or not dot or not loop or not key:
            raise BadUsage(f"{a!r}: write LOOP.KEY=VALUE, e.g. oven.setpoint=60 (see: cyphy set --help)")
        pairs.append((f"{loop}.{key}", _value(a, key, value)))
    from cyphy.client import CommandRejected

    with _connect(url, key_file, unprovisioned) as n:
        loops = set(getattr(n, "loops", ()))
        params = [(p, v) for p, v in pairs if p.split(".", 1)[0] not in loops]
        if params and (len(pairs) > 1 or save):
            raise BadUsage(f"{params[0][0]}: a block's parameter is set on its own, without "
                           f"--save (it lasts until the node resets): one per cyphy set")
        try:
            if params:
                path, value = params[0]
                if not isinstance(value, float):
                    raise BadUsage(f"{path}={value}: a block's parameter takes a number")
                n.set_param(path, value)
            else:
                n.set_many(pairs, save=save)
        except CommandRejected as e:
            if len(pairs) > 1 and "nothing was applied" not in str(e):
                e.args = (f"{e} (nothing was applied)",)
            raise
    for path, value in pairs:
        click.echo(f"{path} = {value}: acknowledged" + (", persisted" if save else ""))


def _state_rows(state: dict, units: dict) -> list[list[str]]:
    rows = []
    for loop, v in state.items():
        if not isinstance(v, dict):
            continue
        u = units.get(loop, {})
        rows.append([loop, num(v.get("mode")),
                     with_unit(v.get("setpoint"), u.get("measurement")),
                     with_unit(v.get("measurement"), u.get("measurement")),
                     with_unit(v.get("output"), u.get("output")),
                     num(v.get("alarms")), num(v.get("faults")),
                     num(v.get("kp")), num(v.get("ki")), num(v.get("kd"))])
    return rows


def fault_time(rec: list) -> str:
    wall = rec[4] if len(rec) > 4 else None
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        return datetime.fromtimestamp(wall / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    t = rec[0]
    return f"t+{t / 1000:.3f} s" if isinstance(t, (int, float)) else num(t)


def fault_value(rec: list, units: dict) -> str:
    kind, value = rec[2], rec[3]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return num(value)
    if kind == "sensor":  # the reading, in milli-units of the sensor
        return with_unit(value / 1000, units.get(rec[1], {}).get("measurement")) + " (reading)"
    if kind == "comms":  # ms since the host's last frame
        return f"{value / 1000:g} s without a host"
    return "-" if value == 0 else num(value)


def format_get(path: str, v: Any, units: dict) -> str:
    """`cyphy get`'s text for people."""
    if path == "faults" and isinstance(v, list):
        if not v:
            return "no faults recorded"
        rows = []
        for rec in v:
            if isinstance(rec, (list, tuple)) and len(rec) >= 4:
                rows.append([fault_time(list(rec)), num(rec[1]), num(rec[2]),
                             fault_value(list(rec), units)])
            else:
                rows.append([num(rec), "", "", ""])
        return table(["time", "loop", "kind", "value"], rows,
                     title=f"{len(v)} fault record(s), oldest first")
    if path == "stats" and isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()):
        cols = [("rate_hz", "rate Hz"), ("ticks", "ticks"), ("overruns", "overruns"),
                ("skipped", "skipped"), ("jitter_p99_us", "jitter p99 us"),
                ("jitter_max_us", "jitter max us"), ("compute_mean_us", "compute mean us"),
                ("compute_max_us", "compute max us"), ("chip_compute_mean_us", "chip mean us"),
                ("chip_compute_max_us", "chip max us"), ("chip_cpu_pct", "chip CPU %")]
        rows = [[loop] + [num(d.get(k)) for k, _ in cols] for loop, d in v.items()]
        return table(["loop"] + [h for _, h in cols], rows, right=tuple(range(1, len(cols) + 1)))
    if path == "state" and isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()):
        return table(["loop", "mode", "setpoint", "measurement", "output", "alarms", "faults",
                      "kp", "ki", "kd"], _state_rows(v, units), right=(2, 3, 4, 7, 8, 9))
    if isinstance(v, dict) and isinstance(v.get("sources"), dict):
        # a loop's state: each value with the layer it came from (config < persisted < runtime)
        u = units.get(path, {})
        src = v["sources"]
        rows = []
        for k, x in v.items():
            if k == "sources":
                continue
            shown = with_unit(x, u.get(UNIT_OF[k])) if k in UNIT_OF else num(x)
            rows.append([k, shown, src.get(k, "")])
        return table(["key", "value", "source"], rows)
    if isinstance(v, dict):
        loop = path if "." not in path else None
        u = units.get(loop or "", {})
        rows = []
        for k, x in v.items():
            if path == "info" and k == "uptime_ms" and isinstance(x, (int, float)):
                rows.append(["uptime", f"{x / 1000:.3f} s"])
            elif path == "info" and k == "units" and isinstance(x, dict):
                rows.append(["units", "; ".join(
                    f"{lp}: measurement {d.get('measurement') or '-'}, output {d.get('output') or '-'}"
                    for lp, d in x.items() if isinstance(d, dict)) or "-"])
            elif k in UNIT_OF:
                rows.append([k, with_unit(x, u.get(UNIT_OF[k]))])
            else:
                rows.append([k, num(x)])
        return table(["key", "value"], rows)
    if "." in path:
        loop, _, key = path.partition(".")
        if key in UNIT_OF:
            return with_unit(v, units.get(loop, {}).get(UNIT_OF[key]))
    return num(v)


@click.command("get", short_help="Read a parameter, a loop's state, state, stats, faults or info.")
@click.argument("url", metavar="URL")
@click.argument("path", metavar="LOOP.KEY")
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON.")
@key_options
@unprovisioned_option
@errors
def get(url: str, path: str, as_json: bool, key_file: str | None, unprovisioned: bool) -> None:
    """Read a parameter: LOOP.KEY (oven.measurement), a loop name (its whole state), or
    state, stats, faults, info. Printed as a table with the config's units; --json prints
    the node's answer as it is."""
    with _connect(url, key_file, unprovisioned) as n:
        v = n.get(path)
        units = {}
        if not as_json and path not in ("stats",):
            units = units_of(v) if path == "info" else node_units(n)
    emit(v, as_json, lambda v: format_get(path, v, units))


CSV_FIELDS = ("host_time", "t_ms", "loop", "setpoint", "measurement", "output", "mode",
              "alarms", "faults", "measurement_units", "output_units")


def _close_quietly(n: Any) -> None:
    try:
        n.close()
    except Exception:  # noqa: BLE001 - a node that is gone
        pass


@click.command(short_help="A live table of every loop's telemetry, optionally to CSV.")
@click.argument("url", metavar="URL")
@click.option("--period-ms", type=click.IntRange(1, 60000), default=100, show_default=True,
              help="Telemetry period.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Record every sample to this CSV file (cyphy plot draws it).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this long (default: until Ctrl-C), waits for the node included.")
@key_options
@unprovisioned_option
@errors
def monitor(url: str, period_ms: int, csv_path: Path | None, seconds: float | None,
            key_file: str | None, unprovisioned: bool) -> None:
    """A live table of every loop: setpoint, measurement, output (in the config's units),
    mode, alarms, faults, jitter (p99 of the loop's period) and link quality (frames lost,
    rejected).

    When the node stops answering (a reset, a power cut, Wi-Fi gone) the monitor says so,
    waits for it, opens a new session and goes on, appending to the same CSV, until
    --seconds or Ctrl-C."""
    from cyphy.client import CommandRejected, ProtocolError, status_names
    from cyphy.links import LinkError
    from cyphy.monitor import LiveTable

    end = None if seconds is None else time.monotonic() + seconds
    patience = max(3.0, 3 * period_ms / 1000)  # no telemetry for this long: the node is gone
    f = csv_path.open("w", newline="") if csv_path is not None else None
    writer = csv.writer(f) if f is not None else None
    if writer is not None:
        writer.writerow(CSV_FIELDS)
    n = None
    try:
        n = _connect(url, key_file, unprovisioned)
        table = LiveTable(n)
        sessions = 1
        with table:
            while True:
                try:
                    samples = n.telemetry(period_ms=period_ms, timeout=patience)
                    units = node_units(n)
                    table.attach(n, units, sessions)
                    for sample in samples:
                        now = time.time()
                        for name, v in sample["loops"].items():
                            st = status_names(v["status"])
                            u = units.get(name, {})
                            if writer is not None:
                                writer.writerow([f"{now:.3f}", sample["t_ms"], name, v["setpoint"],
                                                 v["measurement"], v["output"], st["mode"],
                                                 "|".join(st["alarms"]), "|".join(st["faults"]),
                                                 u.get("measurement", ""), u.get("output", "")])
                        for name, value in sample.get("signals", {}).items():
                            if writer is not None:   # a block's or device channel's value
                                writer.writerow([f"{now:.3f}", sample["t_ms"], name, "", value,
                                                 "", "signal", "", "", "", ""])
                        if f is not None:
                            f.flush()
                        table.update(sample)
                        if end is not None and time.monotonic() >= end:
                            return
                except CommandRejected:
                    raise
                except (ProtocolError, LinkError) as e:
                    if not table.samples:
                        raise  # never worked: a wrong node or URL, not a node that went away
                    why = " ".join(str(e).split())
                name = n.name
                _close_quietly(n)
                n = None
                table.say(f"{name}: {why}; waiting for it to come back (Ctrl-C stops)")
                while n is None:
                    if end is not None and time.monotonic() >= end:
                        table.say(f"{name} did not come back within --seconds {seconds:g}: "
                                  f"stopped" + (f"; {csv_path} has what was recorded" if csv_path else ""))
                        return
                    try:
                        left = None if end is None else end - time.monotonic()
                        n = _connect(url, key_file, unprovisioned,
                                     timeout=2.0 if left is None else max(0.2, min(2.0, left / 3)))
                    except (ProtocolError, LinkError) as e:
                        table.waiting(" ".join(str(e).split()))
                        time.sleep(0.5 if left is None else max(0.0, min(0.5, left)))
                sessions += 1
                table.say(f"{n.name} is back: new session ({sessions}), monitoring goes on"
                          + (f", appending to {csv_path}" if csv_path else ""))
    except KeyboardInterrupt:
        pass
    finally:
        if n is not None:
            _close_quietly(n)
        if f is not None:
            f.close()


BROKER_LISTEN_S = 2.0  # discover --broker listens at least this long (DDATA come ~1/s)


@click.command(short_help="Find nodes: USB-UART bridges, sim nodes, nodes on UDP.")
@click.option("--json", "as_json", is_flag=True, help="Print the nodes found as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds to wait for UDP answers (with --broker: to listen, at least 2).")
@click.option("--udp-port", type=click.IntRange(1, 65535), default=5477, show_default=True)
@click.option("--broker", metavar="mqtt[s]://HOST[:PORT]",
              help="List the devices of the gateways on this MQTT broker instead (from their "
                   "births; asks each gateway heard for a rebirth).")
@click.option("--group", metavar="G", help="With --broker: only this Sparkplug group.")
@key_options
@errors
def discover(as_json: bool, timeout: float, udp_port: int, broker: str | None,
             group: str | None, key_file: str | None) -> None:
    """Find nodes: serial ports with an ESP32 USB-UART bridge, running sim nodes, and nodes
    answering on UDP (by broadcast). With --broker mqtt://HOST[:PORT]: the nodes behind
    gateways on that broker, each with the mqtt:// URL that get, set and monitor take."""
    if broker is None:
        if group is not None:
            raise BadUsage("--group needs --broker: give --broker mqtt://HOST[:PORT] too")
    else:
        return _discover_broker(broker, group, timeout, as_json)
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


def _discover_broker(broker: str, group: str | None, timeout: float, as_json: bool) -> None:
    from cyphy.fleet import discover as discover_devices
    from cyphy.mqtt import MqttError, parse_broker_url

    from cyphy.sparkplug import SparkplugError, validate_id

    try:
        b = parse_broker_url(broker)
        if group is not None:
            validate_id(group, "--group")
    except MqttError as e:
        raise BadUsage(str(e)) from None
    except SparkplugError as e:
        raise BadUsage(f"{e} (Sparkplug ids are non-empty, without + / #)") from None
    listen = max(timeout, BROKER_LISTEN_S)
    found = {"mqtt": discover_devices(broker, group, timeout=listen)}

    def text(d: dict) -> str:
        lines = []
        for x in d["mqtt"]:
            lines.append(f"mqtt    {x['url']:<38} {x['device']} ({x['board'] or '-'}, "
                         f"{x['firmware'] or '-'}), loops {', '.join(x['loops']) or '-'}, "
                         f"gateway {x['group']}/{x['edge']} via {x['link'] or '-'}")
        where = f" in group {group}" if group else ""
        return "\n".join(lines) if lines else (
            f"no devices found on {b}{where} within {listen:g} s (is a cyphy gateway "
            f"publishing there?)")

    emit(found, as_json, text)
    if not found["mqtt"]:
        raise SystemExit(EXIT_FAILED)


@click.command(short_help="A terminal on a node's REPL; the node is not reset.")
@click.argument("port", metavar="PORT")
@click.option("--baud", type=click.IntRange(min=1), default=115200, show_default=True)
@errors
def repl(port: str, baud: int) -> None:
    """An interactive REPL on PORT (a /dev path, serial://..., or sim://NAME). The node is
    not reset and its loops keep running. Ctrl-] leaves."""
    from cyphy import terminal
    from cyphy.links import serial_device

    dev = serial_device(port)
    terminal.run(dev, baud, opened=lambda: click.echo(
        f"cyphy repl: {port} (Ctrl-] leaves; the node is not reset)", err=True))
    click.echo("\ncyphy repl: left", err=True)


@click.command(short_help="Draw a `cyphy monitor --csv` recording as a PNG.")
@click.argument("recording", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The image to write (default: the recording's name with .png); .png, .svg "
                   "or .pdf.")
@errors
def plot(recording: Path, output: Path | None) -> None:
    """Draw a recording from `cyphy monitor --csv` as a PNG: setpoint and measurement,
    and output, per loop, with the config's units when the recording has them."""
    from cyphy.plot import FORMATS, PlotError, plot_recording

    png = output or recording.with_suffix(".png")
    if png.suffix.lower().lstrip(".") not in FORMATS:
        raise BadUsage(f"-o {png}: cannot write a {png.suffix or 'suffix-less'} file: give a "
                       f"name ending in {', '.join('.' + x for x in FORMATS)}")
    try:
        loops = plot_recording(recording, png)
    except PlotError as e:
        raise Failed(str(e)) from None
    click.echo(f"{png}: {len(loops)} loop(s): {', '.join(loops)}")
