"""The gateway's config file (`cyphy gateway --config FILE`): JSON, every key optional,
the command line's options win over the file's, and the node URLs of both are served.

    {
      "broker": "mqtts://gw1@broker.plant:8883",
      "group": "plant", "edge": "gw1",
      "nodes": ["serial:///dev/ttyUSB0", "udp://10.0.0.7"],
      "discover": 5477,
      "allow": ["*/setpoint", "*/mode", "oven/tune"],
      "period_ms": 100, "batch": 1, "report_s": 10,
      "primary_host": "scada1",
      "key_file": "/etc/cyphy/fleet.key"
    }

A bad file is one GatewayConfigError line naming the field (`nodes[1]: ...`) and what to
give; nothing is started. No secrets in it: the broker's password comes from the
environment (cyphy.mqtt), node keys from the key store or the key file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["GatewayConfigError", "load", "KEYS"]

# key -> (type(s) accepted, what to say)
KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "broker": ((str,), "a broker URL, mqtt[s]://[USER@]HOST[:PORT]"),
    "group": ((str,), "the Sparkplug group_id"),
    "edge": ((str,), "the Sparkplug edge_node_id"),
    "nodes": ((list,), "a list of node URLs (serial://, udp://, sim://)"),
    "discover": ((int, bool), "a UDP port to look for nodes on (true: the protocol's 5477)"),
    "allow": ((list,), "a list of LOOP/KEY patterns a DCMD may write, e.g. \"*/setpoint\""),
    "period_ms": ((int,), "the telemetry period, 1 to 60000 ms"),
    "batch": ((int,), "samples per frame and DDATA, 1 to 16"),
    "report_s": ((int, float), "seconds between full reports, at least 0.1"),
    "primary_host": ((str,), "the Primary Host Application's host_id"),
    "key_file": ((str,), "a file with the nodes' key (hex)"),
}


class GatewayConfigError(ValueError):
    """A config file that cannot be used: one line, the field and what to give."""


def load(path: str | Path) -> dict[str, Any]:
    """The file's settings, checked for shape (the gateway checks the values themselves)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise GatewayConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GatewayConfigError(f"--config {path}: not JSON (line {e.lineno}, column {e.colno}: "
                                 f"{e.msg})") from None
    if not isinstance(data, dict):
        raise GatewayConfigError(f"--config {path}: a JSON object is expected "
                                 f"({{\"broker\": ..., \"group\": ..., \"edge\": ..., \"nodes\": [...]}})")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in KEYS:
            raise GatewayConfigError(f"--config {path}: {key}: unknown key (known: "
                                     f"{', '.join(KEYS)})")
        types, what = KEYS[key]
        bad = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if bad:
            raise GatewayConfigError(f"--config {path}: {key}: {json.dumps(value)[:40]} is not "
                                     f"{what}")
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item:
                    raise GatewayConfigError(f"--config {path}: {key}[{i}]: "
                                             f"{json.dumps(item)[:40]} is not a string; {key} is {what}")
        out[key] = value
    if out.get("discover") is True:
        out["discover"] = 5477
    elif out.get("discover") is False:
        out.pop("discover")
    return out
