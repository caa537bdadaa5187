"""A sim node on a bench, booted as in the field, and its state read after a while of its
time: shared by the device, bus, pulse, Modbus and graph tests on the sim."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from test_node_runtime import node_for, reset


@contextmanager
def booted(sim_nodes, name: str, bench: dict, config: dict, loops: int | None = None,
           **kw) -> Iterator:
    """The firmware and config on a new sim node (virtual time unless virtual=False), reset,
    main.py running its loops: its raw-REPL console, closed afterwards."""
    con = node_for(sim_nodes, name, bench, config, **kw)
    try:
        boot = reset(con)
        n = len(config["loops"]) if loops is None else loops
        assert f"cyphy: node {config['name']} running {n} loop(s)" in boot, boot
        yield con
    finally:
        con.close()


def get_after(con, seconds: float, names) -> list:
    """node.get(name) for each name, after `seconds` of the node's time."""
    return json.loads(con.run(
        "import time, json\n"
        f"time.sleep({seconds})\n"
        f"print(json.dumps([node.get(k) for k in {list(names)!r}]))\n",
        timeout=300))
