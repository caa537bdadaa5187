"""Sim nodes running the real firmware with a key, for the protocol tests."""

from __future__ import annotations

import json

from benches import THERMAL
from test_node_runtime import CONFIG, node_for, put, reset

KEY_HEX = "5f" * 32


def boot(sim_nodes, name: str = "proto", config: dict | None = None, key_hex: str | None = KEY_HEX,
         secrets: dict | None = None, bench: dict | None = THERMAL, virtual: bool = False,
         **kw) -> str:
    """Deploy the firmware (+ /secrets.json with the key), reset; the node's port, at the
    friendly prompt with its loops running. kw: for sim_nodes (ram="wroom"...)."""
    con = node_for(sim_nodes, name, bench, config or CONFIG, virtual=virtual, **kw)
    s = dict(secrets or {})
    if key_hex:
        s["key"] = key_hex
    if s:
        put(con, "/secrets.json", json.dumps(s).encode())
    out = reset(con)
    assert f"running {len((config or CONFIG)['loops'])} loop(s)" in out, out
    for secret in (key_hex, (s.get("wifi") or {}).get("password")):
        assert not secret or secret not in out, "a secret in the boot output"
    con.friendly()
    port = con.s.port
    con.close()
    return port
