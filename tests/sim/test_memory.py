"""When memory is short the node degrades in order (issue 12 item 1): the loops and their
safety start first; comms only after them; a part that cannot start is named and printed,
never taking the loops down with it."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from cyphy.provision import compiled_config  # noqa: E402
from test_node_runtime import CONFIG, node_for, put, reset  # noqa: E402

# 4K apart where comms gets dropped, 8K above (the plant's own heap comes on top: bench)
HEAPS = [f"{k}K" for k in [*range(136, 168, 4), *range(168, 232, 8)]]


def _repl(con, code: str, tries: int = 3) -> str | None:
    """code's output, or None if the raw REPL found no 1 KB block for it (MemoryError) a
    few times over: right at the edge the heap holds the loops, the bench's plant (which
    a real plant does not cost) and the names of the comms modules that failed to load,
    scattered, and the REPL's parser gets no chunk."""
    import time

    for _ in range(tries):
        try:
            return con.run(code)
        except AssertionError as e:
            if "MemoryError" not in str(e):
                raise
            time.sleep(0.5)
    return None


def test_a_short_heap_never_takes_the_loops_down_with_comms(sim_nodes):
    # From a heap where nothing fits to one where everything does. Wherever the loops
    # started, the boot went on: comms ran, or was dropped with a message and the loops
    # kept running (before, a MemoryError in comms ended the boot with the loops half set).
    # Provisioned with --force: a node refuses a config that does not fit (test_wroom.py);
    # forced, it runs what fits, in this order.
    seen = {}
    verified = []       # heaps where comms was dropped and the REPL saw the loops run
    for heap in HEAPS:
        con = node_for(sim_nodes, "mem" + heap, THERMAL, CONFIG, main=False, heap=heap)
        put(con, "/config.node.json", compiled_config(json.dumps(CONFIG).encode(), CONFIG, force=True))
        out = reset(con)
        loops = "running 1 loop(s)" in out
        dropped = "comms dropped (not enough memory" in out
        seen[heap] = (loops, dropped)
        assert "Traceback" not in out, out
        if loops:
            assert "did not start" not in out, out
        if dropped:
            con.raw()
            r = _repl(con, "import time\ntime.sleep_ms(500)\n"
                      "print(node.running(), node.dropped, node.comms is None, node.loop('oven').ticks > 0)")
            if r is not None:
                assert r.split() == ["True", "['comms']", "True", "True"], r
                verified.append(heap)
        elif not loops:     # the boot itself ran out, or the loops did not fit (said as such)
            assert "did not start" in out or "its loops did not fit" in out, out
        con.close()
    assert seen[HEAPS[-1]] == (True, False), seen
    # the order was tried, and seen from the REPL at least once (heaps a step apart)
    assert verified, seen


def test_wifi_that_cannot_start_is_dropped_and_the_serial_protocol_runs(sim_nodes):
    # A part that fails for another reason is dropped the same way: here Wi-Fi, which the
    # HAL refuses while an analog input sits on ADC2 (the radio owns ADC2 on ESP32).
    cfg = copy.deepcopy(CONFIG)
    cfg["comms"] = {"udp": True, "udp_port": 5477}
    for ch in cfg["channels"]:
        if ch["kind"] == "adc":
            ch["pin"] = 4  # ADC2
    con = node_for(sim_nodes, "adc2", THERMAL, cfg)
    put(con, "/secrets.json", json.dumps({"wifi": {"ssid": "lab", "password": "x"}}).encode())
    out = reset(con)
    assert "running 1 loop(s)" in out and "wifi dropped (ValueError" in out and "ADC2" in out, out
    con.raw()
    r = con.run("print(node.running(), node.dropped, node.comms is not None, node.comms.net is None)")
    assert r.split() == ["True", "['wifi']", "True", "True"], r
    con.close()
