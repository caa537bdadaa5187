"""Two nodes cooperating over UDP: node b's oven setpoint follows node a's oven
measurement + 5 degC (comms.follow in b's config), node to node, authenticated."""

import copy
import time

import pytest

from cyphy.hil.defaults import THERMAL_BENCH, THERMAL_CONFIG

FAST = copy.deepcopy(THERMAL_BENCH)          # a small oven: it warms within seconds
FAST["plant"].update(tau_s=3, dead_time_s=0.2)


def udp(cfg: dict, **comms) -> dict:
    c = copy.deepcopy(cfg)
    c["comms"] = {"udp": True, **comms}
    c["loops"][0]["controller"]["setpoint"] = 60.0
    return c


@pytest.mark.sim_only
def test_one_nodes_measurement_drives_anothers_setpoint(nodes):
    a = nodes("a", config=udp(THERMAL_CONFIG), bench=FAST, wifi=True)
    follow = [{"loop": "oven", "peer": a.ip, "peer_loop": "oven", "value": "measurement",
               "offset": 5.0, "period_ms": 100}]
    b = nodes("b", config=udp(THERMAL_CONFIG, follow=follow), wifi=True,
              secrets={"peer_keys": {a.ip: a.key_hex}})
    with a.connect() as na, b.connect() as nb:
        deadline = time.monotonic() + 15
        while True:
            ya, spb = na.get("oven.measurement"), nb.get("oven.setpoint")
            if ya > 25 and abs(spb - (ya + 5)) < 1.0:
                break
            assert time.monotonic() < deadline, (ya, spb)
            time.sleep(0.3)
