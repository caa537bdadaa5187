"""Telemetry over a bad serial line (the `link` fixture drops console bytes on the sim):
a frame that lost a byte fails its tag and is never taken; the gap it leaves is counted;
commands still get through."""

import pytest


@pytest.mark.sim_only
def test_telemetry_gaps_are_counted_on_a_lossy_line(node, link):
    with node.connect() as n:
        link.serial.set(drop=0.002, seed=7, direction="from_node")   # about 1 byte in 500
        samples = n.telemetry(period_ms=20)
        for _ in range(150):
            next(samples)
        n.set("oven.setpoint", 30.0)                                 # acknowledged anyway
        link.serial.clear()
        assert n.get("oven.setpoint") == 30.0
        stats = n.link_stats
    dropped = link.serial.stats()
    assert stats.bad_tag > 0 and stats.lost >= stats.bad_tag, stats   # damaged: refused, counted
    assert dropped["from_node"]["dropped"] > 0 and dropped["to_node"]["dropped"] == 0, dropped
