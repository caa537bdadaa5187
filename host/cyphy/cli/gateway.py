"""`cyphy gateway`: a Sparkplug B Edge Node serving cyphy nodes (cyphy.gateway)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from cyphy.cli.common import BadUsage, errors, key_options

SHORT_HELP = "A Sparkplug B Edge Node on an MQTT broker serving cyphy nodes."


@click.command("gateway", short_help=SHORT_HELP)
@click.option("--broker", metavar="mqtt[s]://[USER@]HOST[:PORT]",
              help="The MQTT broker (port 1883, mqtts 8883, if not given); the password "
                   "and TLS files come from $CYPHY_MQTT_PASSWORD, $CYPHY_MQTT_CA... "
                   "(docs/fleet.md).")
@click.option("--group", metavar="G", help="The Sparkplug group_id.")
@click.option("--edge", metavar="E", help="The Sparkplug edge_node_id of this gateway.")
@click.argument("nodes", nargs=-1, metavar="[NODE_URL...]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A JSON file with any of these settings and the nodes (docs/fleet.md); "
                   "options given here win, node URLs of both are served.")
@click.option("--discover", "discover_port", type=click.IntRange(1, 65535), metavar="PORT",
              default=None, help="Also serve the nodes that answer a broadcast on this UDP port "
                                 "(5477 is the protocol's) and verify with a key held here; "
                                 "looked for again every 30 s.")
@click.option("--allow", multiple=True, metavar="LOOP/KEY",
              help="A metric DCMDs may write (fnmatch pattern, e.g. '*/setpoint'); repeat. "
                   "Default: every writable metric.")
@click.option("--period-ms", type=click.IntRange(1, 60000), default=None,
              help="The nodes' telemetry period: DDATA on change at most this often. [default: 100]")
@click.option("--batch", type=click.IntRange(1, 16), default=None,
              help="Samples per telemetry frame (and per DDATA: the older ones as historical "
                   "values). More carry bigger fleets at the cost of latency. [default: 1]")
@click.option("--primary-host", metavar="HOST_ID", default=None,
              help="The Sparkplug Primary Host Application: publish the births only while its "
                   "STATE says it is online (Sparkplug 3.0).")
@click.option("--report-s", type=click.FloatRange(min=0.1), default=None,
              help="Every metric again (and the gains re-read) this often. [default: 10]")
@key_options
@errors
def gateway(broker: str | None, group: str | None, edge: str | None, nodes: tuple[str, ...],
            config_file: str | None, discover_port: int | None, allow: tuple[str, ...],
            period_ms: int | None, batch: int | None, primary_host: str | None,
            report_s: float | None, key_file: str | None) -> None:
    """Serve cyphy nodes as Sparkplug B Devices of the Edge Node GROUP/EDGE on an MQTT
    broker, until Ctrl-C or SIGTERM, for example
    `cyphy gateway --broker mqtt://127.0.0.1 --group plant --edge gw1 sim://oven udp://10.0.0.7`.

    NODE_URL: serial:///dev/ttyUSB0, udp://HOST[:PORT], sim://NAME. Each node is a Device
    named by its name: DBIRTH with its metrics, DDATA on change and every --report-s,
    DDEATH when it is lost (it is looked for again); DCMD writes of LOOP/setpoint,
    LOOP/mode, LOOP/kp, LOOP/ki, LOOP/kd, LOOP/output and LOOP/tune (start, abort) that
    --allow lets through become one authenticated command, the result in Command/last and
    Command/ok. The broker lost: reconnect with backoff and birth again. Ctrl-C or
    SIGTERM: DDEATHs, NDEATH, exit 0 (docs/fleet.md)."""
    from cyphy.gateway import Gateway, GatewayError
    from cyphy.gateway_config import GatewayConfigError, load

    try:
        cfg = load(config_file) if config_file else {}
    except GatewayConfigError as e:
        raise BadUsage(str(e)) from None
    broker = broker or cfg.get("broker")
    group = group or cfg.get("group")
    edge = edge or cfg.get("edge")
    missing = [f"--{k}" for k, v in (("broker", broker), ("group", group), ("edge", edge)) if not v]
    if missing:
        raise BadUsage(f"{', '.join(missing)} missing: give {' and '.join(missing)} on the "
                       f"command line or in --config FILE")
    urls = list(dict.fromkeys([*cfg.get("nodes", []), *nodes]))
    try:
        gw = Gateway(broker, group, edge, urls,
                     period_ms=period_ms or cfg.get("period_ms", 100),
                     batch=batch or cfg.get("batch", 1),
                     key_file=key_file or cfg.get("key_file"),
                     report_s=report_s or cfg.get("report_s", 10.0),
                     primary_host=primary_host or cfg.get("primary_host"),
                     allow=list(allow) or cfg.get("allow"),
                     discover_port=discover_port or cfg.get("discover"))
    except GatewayError as e:
        raise BadUsage(str(e)) from None
    _log_to_stderr()
    stop = threading.Event()
    got: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        got.append(signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C and SIGTERM are how a service is stopped on purpose (systemctl stop, docker
    # stop): the gateway says goodbye (DDEATHs, NDEATH), logs one line and exits 0, not
    # 130 (cli/common.py EXIT_INTERRUPTED), so that supervisors do not count it a failure.
    try:
        gw.start()
        while not stop.wait(0.5):
            pass
    finally:
        gw.stop(reason=got[0] if got else "")
        for s, h in old.items():
            signal.signal(s, h)


def _log_to_stderr() -> None:
    log = logging.getLogger("cyphy.gateway")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s cyphy gateway: %(message)s",
                                         datefmt="%Y-%m-%dT%H:%M:%S"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
