"""Node config (firmware/lib/cyphy_node/config.py): valid configs load, every kind of error
gives its exact message, identically on MicroPython and CPython, and no mutation of a valid
config raises anything but ConfigError."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

REPO = Path(__file__).resolve().parents[2]
FIRMWARE_LIB = REPO / "firmware" / "lib"
EXAMPLE = REPO / "firmware" / "config.example.json"

sys.path.insert(0, str(FIRMWARE_LIB))
from cyphy_node import config  # noqa: E402


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


# A second valid config: on/off control of a dout through a din-less node, a DAC output,
# no plant, comms timeout disabled.
ONOFF = {
    "name": "tank_7",
    "comms_timeout_ms": 0,
    "channels": [
        {"name": "level", "pin": 36, "kind": "adc", "units": "cm", "valid": [0, 100],
         "scale": {"mv_min": 2400, "mv_max": 200, "eng_min": 0, "eng_max": 100}},
        {"name": "pump", "pin": 27, "kind": "dout", "failsafe": 0, "invert": True},
        {"name": "valve", "pin": 25, "kind": "dac", "range": [0, 10], "failsafe": 10},
    ],
    "loops": [
        {"name": "fill", "rate_hz": 1000, "sensor": "level", "actuator": "pump",
         "controller": {"type": "onoff", "setpoint": 50, "hysteresis": 4,
                        "direction": "direct"}},
        {"name": "drain", "rate_hz": 1, "sensor": "level", "actuator": "valve",
         "controller": {"type": "pid", "ki": 0.2, "kp": 0, "setpoint": 50,
                        "direction": "reverse", "p_on": "measurement"},
         "alarms": {"low": 10}},
    ],
}


# --- valid configs ---------------------------------------------------------------------------

def test_example_and_onoff_configs_validate_identically_on_both_runtimes(both):
    script = f"""
import json
from cyphy_node import config
c = config.load({str(EXAMPLE)!r})
o = config.validate(json.loads({json.dumps(json.dumps(ONOFF))}))
print(json.dumps([c.to_dict(), o.to_dict(), c.loops[0].controller.kp,
                  c.channel("heater").failsafe, c.loop("oven").alarms.high,
                  o.loops[1].controller.out_max, o.channel("pump").failsafe]))
"""
    ex, onoff, kp, fs, high, out_max, pump_fs = both(script)
    assert kp == 8.0 and fs == 0 and high == 90
    assert out_max == 10 and pump_fs == 0           # defaults: out range = actuator range
    # defaults are filled in
    pid = ex["loops"][0]["controller"]
    assert pid["p_on"] == "error" and pid["deadband"] == 0
    assert ex["channels"][2] == {"name": "lid", "pin": 27, "kind": "din", "invert": False,
                                 "pull": "up", "valid": [0, 1]}
    assert ex["schema"] == 1 and ex["plant"]["type"] == "fotd"
    assert onoff["plant"] is None and onoff["loops"][0]["filter"] is None
    assert onoff["loops"][1]["controller"]["ramp_per_s"] is None
    # a validated config validates again to itself (the host can provision to_dict())
    assert config.validate(ex).to_dict() == ex


# --- every kind of error, exact message, both runtimes --------------------------------------

NAN = "__nan__"     # the script turns this into float('nan'): JSON cannot carry it

# (mutation, expected message). A mutation is a list of ops on the example config:
# ["set", path, value], ["del", path] or ["add", path, value] (append to a list).
CASES = [
    ([["root", [1]]], "config: must be an object, got a list"),
    ([["set", ["nmae"], "x"]],
     "nmae: unknown key; allowed: name, comms_timeout_ms, channels, loops, schema, node_id, comms, plant, blocks, tasks"),
    ([["del", ["name"]]], "name: is required"),
    ([["set", ["loops", 0, "alarms", "high limit"], 1]],
     'loops[0].alarms["high limit"]: unknown key; allowed: high, low, hysteresis'),
    ([["set", [""], 1]],
     '[""]: unknown key; allowed: name, comms_timeout_ms, channels, loops, schema, node_id, comms, plant, blocks, tasks'),
    ([["set", ["name"], "1oven"]], 'name: must be a name of 1 to 32 ASCII letters, digits, _ '
                                   'or -, starting with a letter; got "1oven"'),
    ([["set", ["name"], "ofen-\u00e4"]], 'name: must be a name of 1 to 32 ASCII letters, '
                                        'digits, _ or -, starting with a letter; got "ofen-\u00e4"'),
    ([["set", ["schema"], 2]], "schema: must be 1 (the only version so far), got 2"),
    ([["set", ["node_id"], 255]], "node_id: must be an integer from 1 to 254, got 255"),
    ([["set", ["comms"], {"udp": 1}]], "comms.udp: must be true or false, got 1"),
    ([["set", ["comms"], {"udp_port": 0}]], "comms.udp_port: must be an integer from 1 to 65535, got 0"),
    ([["set", ["comms"], {"tcp": True}]], "comms.tcp: unknown key; allowed: udp, udp_port, follow"),
    ([["set", ["comms"], {"follow": [{"loop": "oven", "peer": "10.0.0.2", "peer_loop": "x"}]}]],
     "comms.follow: needs udp: true (followers talk UDP)"),
    ([["set", ["comms"], {"udp": True, "follow": [{"loop": "oven", "peer": "10.0.0", "peer_loop": "x"}]}]],
     'comms.follow[0].peer: must be the other node\'s IPv4 address, got "10.0.0"'),
    ([["set", ["comms"], {"udp": True, "follow": [{"loop": "ofen", "peer": "10.0.0.2", "peer_loop": "x"}]}]],
     'comms.follow[0].loop: no loop "ofen" (loops: oven)'),
    ([["set", ["comms_timeout_ms"], 10]],
     "comms_timeout_ms: must be 0 (no timeout) or an integer from 50 to 3600000, got 10"),
    ([["set", ["comms_timeout_ms"], "5s"]],
     'comms_timeout_ms: must be 0 (no timeout) or an integer from 50 to 3600000, got "5s"'),
    ([["set", ["comms_timeout_ms"], 0.0]],
     "comms_timeout_ms: must be 0 (no timeout) or an integer from 50 to 3600000, got 0.0"),
    ([["set", ["channels"], {}]], "channels: must be a list, got an object"),
    ([["set", ["channels", 0], "temp"]], 'channels[0]: must be an object, got "temp"'),
    ([["del", ["channels", 0, "kind"]]], "channels[0].kind: is required"),
    ([["set", ["channels", 0, "kind"], "adcx"]],
     'channels[0].kind: must be one of adc, din, pwm, dout, dac, counter, ds18b20, encoder, max31855, modbus_in, sht3x, modbus_out, tpo; got "adcx"'),
    ([["set", ["channels", 1, "scale"], {}]],
     "channels[1].scale: unknown key; allowed: name, pin, kind, range, failsafe, units, "
     "freq_hz, invert"),
    ([["del", ["channels", 1, "failsafe"]]], "channels[1].failsafe: is required"),
    ([["set", ["channels", 1, "failsafe"], 150]],
     "channels[1].failsafe: must be within range [0, 100], got 150"),
    ([["set", ["channels", 1, "freq_hz"], 0]],
     "channels[1].freq_hz: must be an integer from 1 to 40000000, got 0"),
    ([["set", ["channels", 0, "pin"], 60]],
     "channels[0].pin: must be an integer from 0 to 48, got 60"),
    ([["set", ["channels", 0, "pin"], "34"]],
     'channels[0].pin: must be an integer from 0 to 48, got "34"'),
    ([["set", ["channels", 1, "pin"], 34]],
     'channels[1].pin: pin 34 is already used by channel "temp"'),
    ([["set", ["channels", 1, "name"], "temp"]], 'channels[1].name: duplicate name "temp"'),
    ([["set", ["channels", 0, "scale", "mv_max"], 3400]],
     "channels[0].scale.mv_max: must be from 0 to 3300, got 3400"),
    ([["set", ["channels", 0, "scale", "mv_max"], 0]],
     "channels[0].scale.mv_max: must differ from mv_min"),
    ([["set", ["channels", 0, "scale", "raw_max"], 64225]],
     "channels[0].scale.raw_max: raw ADC counts are not accepted (ADC.read_u16() is the chip's "
     "uncalibrated, non-linear reading); give mv_min and mv_max, the pin's millivolts at eng_min "
     "and eng_max (read calibrated)"),
    ([["set", ["channels", 0, "scale", "eng_max"], 10000000]],
     "channels[0].scale.eng_max: must be from -536870 to 536870, got 10000000"),
    ([["del", ["channels", 0, "scale", "eng_min"]]], "channels[0].scale.eng_min: is required"),
    ([["set", ["channels", 0, "valid"], [152, -2]]],
     "channels[0].valid: min (152) must be below max (-2)"),
    ([["set", ["channels", 0, "valid"], "0-150"]],
     'channels[0].valid: must be a list [min, max], got "0-150"'),
    ([["set", ["channels", 0, "valid"], [0, "x"]]],
     'channels[0].valid[1]: must be a number, got "x"'),
    ([["set", ["channels", 0, "units"], "degrees Celsius, calibrated"]],
     'channels[0].units: must be a string of at most 16 characters, got "degrees Celsius, '
     'calibrated"'),
    ([["set", ["channels", 0, "atten_db"], 3]],
     "channels[0].atten_db: must be one of 0, 2.5, 6, 11; got 3"),
    ([["set", ["channels", 2, "pull"], "sideways"]],
     'channels[2].pull: must be one of none, up, down; got "sideways"'),
    ([["set", ["channels", 3, "failsafe"], 2]], "channels[3].failsafe: must be 0 or 1, got 2"),
    ([["set", ["channels", 3, "invert"], "yes"]],
     'channels[3].invert: must be true or false, got "yes"'),
    ([["set", ["loops", 0, "controller", "kp"], "abc"]],
     'loops[0].controller.kp: must be a number, got "abc"'),
    ([["set", ["loops", 0, "controller", "kp"], True]],
     "loops[0].controller.kp: must be a number, got true"),
    ([["set", ["loops", 0, "controller", "kp"], None]],
     "loops[0].controller.kp: must be a number, got null"),
    ([["set", ["loops", 0, "controller", "kp"], NAN]],
     "loops[0].controller.kp: must be a finite number, got nan"),
    ([["set", ["loops", 0, "controller", "kp"], -1]],
     "loops[0].controller.kp: must be from 0 to 536870, got -1"),
    ([["set", ["loops", 0, "controller", "kP"], 1]],
     "loops[0].controller.kP: unknown key; allowed: type, kp, setpoint, ki, kd, out_min, "
     "out_max, ramp_per_s, direction, d_filter_tau_s, p_on, d_on, deadband, anti_windup, "
     "out_avg"),
    ([["set", ["loops", 0, "controller", "anti_windup"], "none"]],
     'loops[0].controller.anti_windup: must be one of conditional, clamp; got "none"'),
    ([["set", ["loops", 0, "controller", "out_avg"], 33]],
     "loops[0].controller.out_avg: must be an integer from 1 to 32, got 33"),
    ([["set", ["channels", 1, "range"], [0, 50000]], ["set", ["loops", 0, "controller", "out_max"], 40000]],
     "loops[0].controller.out_max: must be within the pid's output limits [-33554, 33554], "
     "got 40000"),
    ([["del", ["loops", 0, "controller", "type"]]], "loops[0].controller.type: is required"),
    ([["set", ["loops", 0, "controller", "type"], "pi"]],
     'loops[0].controller.type: must be one of pid, onoff; got "pi"'),
    ([["set", ["loops", 0, "controller", "kp"], 0], ["set", ["loops", 0, "controller", "ki"], 0],
      ["set", ["loops", 0, "controller", "kd"], 0]], "loops[0].controller: kp, ki and kd are all 0"),
    ([["set", ["loops", 0, "controller", "setpoint"], 200]],
     "loops[0].controller.setpoint: must be within the sensor's valid range [10, 149], got 200"),
    ([["set", ["loops", 0, "controller", "out_max"], 120]],
     "loops[0].controller.out_max: must be within the actuator's range [0, 100], got 120"),
    ([["set", ["loops", 0, "controller", "out_min"], 50],
      ["set", ["loops", 0, "controller", "out_max"], 40]],
     "loops[0].controller.out_max: must be above out_min (50), got 40"),
    ([["set", ["loops", 0, "controller", "ramp_per_s"], 0]],
     "loops[0].controller.ramp_per_s: must be > 0 and <= 536870, got 0"),
    ([["set", ["loops", 0, "controller", "direction"], "up"]],
     'loops[0].controller.direction: must be one of direct, reverse; got "up"'),
    ([["set", ["loops", 0, "controller"], {"type": "onoff", "setpoint": 60, "hysteresis": -1}]],
     "loops[0].controller.hysteresis: must be from 0 to 536870, got -1"),
    ([["set", ["loops", 0, "controller"], {"type": "onoff", "setpoint": 60, "kp": 1}]],
     "loops[0].controller.kp: unknown key; allowed: type, setpoint, hysteresis, direction"),
    ([["set", ["loops", 0, "rate_hz"], 2000]],
     "loops[0].rate_hz: must be an integer from 1 to 1000, got 2000"),
    ([["set", ["loops", 0, "rate_hz"], 2.5]],
     "loops[0].rate_hz: must be an integer from 1 to 1000, got 2.5"),
    ([["del", ["loops", 0, "actuator"]]], "loops[0].actuator: is required"),
    ([["set", ["loops", 0, "sensor"], "nope"]],
     'loops[0].sensor: must name a channel (fan, heater, lid, temp), got "nope"'),
    ([["set", ["loops", 0, "sensor"], "heater"]],
     'loops[0].sensor: "heater" is an output channel (pwm); a loop\'s sensor must be an input '
     'channel (adc, din, counter, ds18b20, encoder, max31855, modbus_in, sht3x)'),
    ([["set", ["loops", 0, "actuator"], "temp"]],
     'loops[0].actuator: "temp" is an input channel (adc); a loop\'s actuator must be an '
     'output channel (pwm, dout, dac, modbus_out, tpo)'),
    ([["set", ["loops", 0, "actuator"], "fan"]],
     'loops[0].actuator: "fan" is a dout channel; a pid controller needs a pwm, dac or tpo (time-proportioned) actuator'),
    ([["add", ["loops"], {"name": "again", "rate_hz": 1, "sensor": "temp", "actuator": "heater",
                          "controller": {"type": "onoff", "setpoint": 50}}]],
     'loops[1].actuator: "heater" is already driven by loop "oven"'),
    ([["add", ["loops"], {"name": "oven", "rate_hz": 1, "sensor": "temp", "actuator": "fan",
                          "controller": {"type": "onoff", "setpoint": 50}}]],
     'loops[1].name: duplicate name "oven"'),
    ([["set", ["loops"], [1] * 9]], "loops: must have at most 8 entries, got 9"),
    ([["set", ["loops", 0, "filter", "type"], "median"]],
     'loops[0].filter.type: must be one of lowpass; got "median"'),
    ([["set", ["loops", 0, "filter", "tau_s"], 0]],
     "loops[0].filter.tau_s: must be > 0 and <= 100000, got 0"),
    ([["set", ["loops", 0, "alarms"], {}]], "loops[0].alarms: needs high, low or both"),
    ([["set", ["loops", 0, "alarms", "low"], 95]],
     "loops[0].alarms.high: must be above low (95), got 90"),
    ([["set", ["loops", 0, "alarms", "high"], 200]],
     "loops[0].alarms.high: must be within the sensor's valid range [10, 149], got 200"),
    ([["set", ["plant", "type"], "boiler"]],
     'plant.type: must be one of dcmotor, fotd, second_order, twotank; got "boiler"'),
    ([["set", ["plant", "J"], 0.01]],
     "plant.J: unknown key; allowed: type, gain, tau_s, dead_time_s, ambient, noise, initial, "
     "disturbances, seed"),
    ([["set", ["plant", "tau_s"], "slow"]], 'plant.tau_s: must be a number, got "slow"'),
    ([["set", ["plant", "noise"], [0.05]]], "plant.noise: must be an object, got a list"),
    ([["del", ["plant", "disturbances", 0, "at_s"]]], "plant.disturbances[0].at_s: is required"),
    ([["set", ["plant", "disturbances", 0, "at_s"], -5]],
     "plant.disturbances[0].at_s: must be from 0 to 1000000000, got -5"),
]

APPLY = f"""
import json
from cyphy_node import config
with open({str(EXAMPLE)!r}) as f:
    BASE = f.read()

def value(v):
    return float("nan") if v == "__nan__" else v

def mutate(ops):
    d = json.loads(BASE)
    for op in ops:
        if op[0] == "root":
            return op[1]
        path, node = op[1], d
        for k in path[:-1]:
            node = node[k]
        if op[0] == "set":
            node[path[-1]] = value(op[2])
        elif op[0] == "del":
            del node[path[-1]]
        else:
            node[path[-1]].append(op[2])
    return d

def message(d):
    try:
        config.validate(d)
        return "OK"
    except config.ConfigError as e:
        return str(e)
"""


def test_every_error_has_its_exact_message_on_both_runtimes(both, tmp_path):
    cases = tmp_path / "cases.json"  # read from a file: a literal this long would not
    cases.write_text(json.dumps([c[0] for c in CASES]))  # compile in a small heap
    script = APPLY + f"""
with open({str(cases)!r}) as f:
    CASES = json.load(f)
# one message per line (valid JSON as a whole): no 5 KB string at the end of a small heap
print("[")
for i in range(len(CASES)):
    print(("," if i else "") + json.dumps(message(mutate(CASES[i]))))
print("]")
"""
    got = both(script)
    for (ops, want), msg in zip(CASES, got):
        assert msg == want, ops


def test_config_error_carries_path_and_reason():
    with pytest.raises(config.ConfigError) as e:
        d = example()
        d["loops"][0]["controller"]["kp"] = "abc"
        config.validate(d)
    assert isinstance(e.value, ValueError)
    assert e.value.path == "loops[0].controller.kp"
    assert e.value.reason == 'must be a number, got "abc"'


def test_load_reports_unreadable_and_malformed_files(mpy, tmp_path, cpy):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",')
    arr = tmp_path / "arr.json"
    arr.write_text("[]")
    script = f"""
import json
from cyphy_node import config
out = []
for p in ({str(tmp_path / "missing.json")!r}, {str(bad)!r}, {str(arr)!r}):
    try:
        config.load(p)
        out.append("OK")
    except config.ConfigError as e:
        out.append(str(e))
print(json.dumps(out))
"""
    for out in (json.loads(mpy(script)), json.loads(cpy(script))):
        assert out[0] == f"{tmp_path / 'missing.json'}: cannot be read (OSError 2)"
        # the JSON parser's own words differ by runtime; the prefix does not
        assert out[1].startswith(f"{bad}: is not valid JSON (")
        assert out[2] == "config: must be an object, got a list"


def test_plant_keys_match_the_sim_plant_models():
    sys.path.insert(0, str(REPO / "boards" / "sim" / "rom"))
    try:
        import _plant
    except ImportError:
        pytest.skip("sim plant models not importable on CPython")
    finally:
        sys.path.pop(0)
    assert sorted(config.PLANTS) == sorted(_plant.TYPES)
    for name, cls in _plant.TYPES.items():
        assert set(config.PLANTS[name]) == {p[0] for p in cls.PARAMS} | set(cls.loads), name
    # and the example's plant section builds a real sim plant
    _plant.make(example()["plant"], seed=1)


# --- property: any mutation validates or raises ConfigError, nothing else ------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=8,
)
# values that are plausible for some field, so mutations often get past the first check
plausible = st.sampled_from([0, 1, -1, 0.5, 1000, 1001, 65535, 10**7, "", "temp", "heater",
                             "fan", "lid", "adc", "pwm", "dout", "din", "dac", "pid", "onoff",
                             "lowpass", "direct", "fotd", [0, 100], [100, 0], [], {}, None, True])


def paths(node, prefix=()):
    """Every path into a JSON tree (objects and lists), the root included."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


def mutate(data, base):
    d = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4), label="n_mutations")):
        all_paths = list(paths(d))
        path = data.draw(st.sampled_from(all_paths), label="path")
        op = data.draw(st.sampled_from(["set", "set", "del", "add_key", "dup"]), label="op")
        if not path:
            if op == "set":
                return copy.deepcopy(data.draw(json_values, label="root"))
            continue
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op == "set":
            # deep copies: sampled_from hands out the same list/dict objects every time
            parent[key] = copy.deepcopy(data.draw(plausible | json_values, label="value"))
        elif op == "del":
            del parent[key]
        elif op == "add_key" and isinstance(parent[key], dict):
            parent[key][data.draw(st.text(max_size=10), label="new key")] = \
                copy.deepcopy(data.draw(plausible | json_values, label="new value"))
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return d


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_mutation_validates_or_raises_config_error(data):
    base = data.draw(st.sampled_from([example(), ONOFF]), label="base")
    d = mutate(data, base)
    try:
        cfg = config.validate(d)
    except config.ConfigError as e:
        # a message always names a path and a reason
        assert e.path and e.reason and str(e) == f"{e.path}: {e.reason}"
        return
    # when it validates, the result is self-consistent
    out = cfg.to_dict()
    assert config.validate(out).to_dict() == out
    names = {c["name"]: c for c in out["channels"]}
    for lp in out["loops"]:
        assert names[lp["sensor"]]["kind"] in config.INPUTS
        assert names[lp["actuator"]]["kind"] in config.OUTPUTS
        assert 1 <= lp["rate_hz"] <= 1000
    for c in out["channels"]:
        if "failsafe" in c:
            assert c["range"][0] <= c["failsafe"] <= c["range"][1]
    for v in numbers(out):
        assert math.isfinite(v)


def numbers(node):
    if isinstance(node, bool):
        return
    if isinstance(node, (int, float)):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from numbers(v)
