"""A user block in the loop (docs/user-blocks.md): the user's own PI controller
(user_blocks/mypi.py) runs in the node's control pass in place of the built-in PID and
holds the oven at its setpoint; an exception in it takes the heater fail-safe and is
recorded, like a loop's. `cyphy provision` sends the module with the config (the
fixture's user_dir says where it is)."""

import copy
import json
from pathlib import Path

import pytest

from cyphy.client import CommandRejected
from cyphy.hil.defaults import THERMAL_CONFIG

CONFIG = copy.deepcopy(THERMAL_CONFIG)
CONFIG["loops"] = []
CONFIG["blocks"] = [{"name": "pi", "type": "user", "module": "mypi", "inputs": ["temp"],
                     "params": {"setpoint": 60, "kp": 4.9, "ki": 0.034},
                     "actuators": {"out": "heater"}, "units": "%", "range": [0, 100]}]
CONFIG["tasks"] = [{"name": "main", "rate_hz": 10, "order": ["pi"]}]
USER_DIR = Path(__file__).with_name("user_blocks")


@pytest.mark.sim_only  # 25 minutes of real time on a board
@pytest.mark.cyphy(config=CONFIG, user_dir=USER_DIR, virtual_time=True)
def test_the_users_pi_holds_the_oven(node, plant):
    # the fixture records the block by name, as a signal of the node (no loops here)
    r = node.record(120, period_ms=1000)
    assert set(r) == {"pi"}
    heater = r["pi"].measurement
    assert len(heater) == 121 and max(heater) == 100.0 and 0 < heater[-1] < 100
    out = node.exec("import time, json\ntime.sleep(1500)\n"
                    "print(json.dumps([node.get('pi'), node.stats()['main']['overruns']]))")
    pi, overruns = json.loads(out)
    assert abs(plant.true("temperature") - 60.0) < 0.5
    assert 40 < pi["value"] < 50 and pi["module"] == "mypi"    # ~44 % holds 60 degC
    assert overruns == 0


@pytest.mark.sim_only
@pytest.mark.cyphy(config=CONFIG, user_dir=USER_DIR, virtual_time=True)
def test_an_exception_in_the_users_code_takes_the_outputs_fail_safe(node):
    # first its parameters by name, through the protocol (the module's Block.set)
    node.set_param("pi.setpoint", 70)
    pi = node.get("pi")
    assert pi["setpoint"] == 70.0 and pi["kp"] == 4.9 and pi["module"] == "mypi"
    assert node.exec("print(node.graph.blocks['pi'].impl.sp)").strip() == "70000"
    with pytest.raises(CommandRejected, match="a gain must be >= 0"):
        node.set_param("pi.kp", -1)
    with pytest.raises(CommandRejected, match="nope"):
        node.set_param("pi.nope", 1)
    assert node.get("pi")["kp"] == 4.9
    node.exec("import time\ntime.sleep(60)\n")
    out = node.exec(
        "b = node.graph.blocks['pi']\n"
        "def broken(x, y):\n"
        "    raise ValueError('sensor reading makes no sense')\n"
        "b.impl.tick = broken\n"
        "time.sleep(1)\n"
        "print(node.tasks[0].fault, node.channels['heater'].value, repr(node.tasks[0].last_exc))\n")
    fault, heater, exc = out.split(None, 2)
    assert int(fault) & 2 and heater == "0" and "sense" in exc
    recs = json.loads(node.exec("import json\nprint(json.dumps(node.faults()))"))
    assert ["main", "exception"] in [r[1:3] for r in recs]

