"""The signal graph's config (blocks, tasks, and the loop keys that wire a loop into it):
every mistake is refused with the field's path and what to do, with the same words on
MicroPython (a node validating its own /config.json) and on CPython (cyphy check and
provision)."""

from __future__ import annotations

import copy
import json

import pytest

from cyphy_node import config

H = {"mv_min": 0, "mv_max": 2450, "eng_min": 0, "eng_max": 200}
BASE = {
    "name": "tanks", "comms_timeout_ms": 0,
    "channels": [
        {"name": "h1", "pin": 34, "kind": "adc", "units": "mm", "scale": H, "valid": [13, 198]},
        {"name": "h2", "pin": 35, "kind": "adc", "units": "mm", "scale": H, "valid": [13, 198]},
        {"name": "pump", "pin": 25, "kind": "dac", "range": [0, 10], "units": "V", "failsafe": 0},
        {"name": "drain", "pin": 26, "kind": "pwm", "range": [0, 100], "failsafe": 0}],
    "loops": [
        {"name": "level", "sensor": "h2",
         "controller": {"type": "pid", "kp": 2, "ki": 0.02, "setpoint": 100}},
        {"name": "feed", "sensor": "h1", "actuator": "pump", "setpoint_from": "level",
         "feedforward": "ff",
         "controller": {"type": "pid", "kp": 0.2, "ki": 0.01, "setpoint": 60}}],
    "blocks": [
        {"name": "ff", "type": "feedforward", "input": "h2", "gain": 0.01},
        {"name": "mean", "type": "math", "op": "sum", "inputs": ["h1", "h2"], "gains": [0.5, 0.5]},
        {"name": "split", "type": "split_range", "input": "mean", "outputs": [
            {"actuator": "drain", "input": [0, 100], "output": [100, 0]},
            {"actuator": "drain2", "input": [100, 200], "output": [0, 100]}]}],
    "tasks": [{"name": "tanks", "rate_hz": 10, "order": ["ff", "level", "feed", "mean", "split"]}],
}
BASE["channels"] += [{"name": "drain2", "pin": 27, "kind": "pwm", "range": [0, 100],
                      "failsafe": 0},
                     {"name": "spare", "pin": 32, "kind": "pwm", "range": [0, 100], "failsafe": 0}]
OUTER_RANGE = (("loops", 0, "controller"), {"type": "pid", "kp": 2, "setpoint": 100,
                                            "out_min": 13, "out_max": 198})

# (path of keys to set, value, the whole message); value None deletes the key; a path of
# pairs makes several changes
CASES = [
    ((), None, "OK"),
    (("blocks", 0, "type"), "pid", 'blocks[0].type: must be one of feedforward, limit, math, '
     'rate_limit, ratio, select, split_range, user; got "pid"'),
    (("blocks", 0, "gain"), None, "blocks[0].gain: is required"),
    (("blocks", 0, "lead_s"), 5, "blocks[0].lag_s: must be > 0 with a lead (a pure lead is not "
     "realisable: give a lag of a few periods)"),
    (("blocks", 0, "input"), "h9", 'blocks[0].input: no channel, block or loop "h9"'),
    (("blocks", 0, "name"), "h1", 'blocks[0].name: duplicate name "h1" (blocks, channels and '
     'loops share one namespace of signals)'),
    (("blocks", 1, "op"), "mul", 'blocks[1].gains: only for op "sum"'),
    (("blocks", 1, "gains"), [1], "blocks[1].gains: must have one gain per input (2), got 1"),
    (("blocks", 1, "inputs"), ["h1", "split"], 'blocks[1].inputs[1]: block "split" must come '
     'before "mean" in task "tanks"\'s order (each value is computed before it is read)'),
    (("blocks", 2, "outputs", 1, "actuator"), "pump", 'blocks[2].outputs[1].actuator: "pump" is '
     'already driven by loop "feed"'),
    (("blocks", 2, "outputs", 1, "actuator"), "h1", "blocks[2].outputs[1].actuator: must name an "
     "output channel (drain, drain2, pump, spare), got \"h1\""),
    (("blocks", 2, "outputs", 0, "output"), [150, 0], 'blocks[2].outputs[0].output[0]: must be '
     'within the range of channel "drain" [0, 100], got 150'),
    (("tasks", 0, "order"), ["ff", "level", "feed", "mean"], 'blocks[2]: block "split" is in no '
     'task\'s "order": add it where it should run'),
    (("tasks", 0, "order"), ["ff", "feed", "level", "mean", "split"], 'loops[1].setpoint_from: '
     'loop "level" must come before "feed" in task "tanks"\'s order (each value is computed '
     'before it is read)'),
    (("tasks", 0, "order"), ["ff", "level", "feed", "mean", "split", "nope"], 'tasks[0].order[5]: '
     'no block or loop "nope" (blocks: ff, mean, split; loops: feed, level)'),
    (("tasks", 0, "order"), ["ff", "level", "feed", "mean", "split", "ff"], 'tasks[0].order[5]: '
     '"ff" is already in the order of task "tanks": each block and loop runs in one task'),
    (("tasks", 0, "rate_hz"), 0, "tasks[0].rate_hz: must be an integer from 1 to 1000, got 0"),
    (("loops", 1, "rate_hz"), 20, 'loops[1].rate_hz: must be 10, the rate of its task "tanks", '
     'or be left out; got 20'),
    ((OUTER_RANGE, (("loops", 1, "setpoint_from"), "feed")), (),
     "loops[1].setpoint_from: cannot be the loop itself"),
    (("loops", 0, "actuator"), "spare", 'loops[1].setpoint_from: loop "level" drives channel '
     '"spare": the outer loop of a cascade drives only this setpoint (leave its actuator out)'),
    ((OUTER_RANGE, (("loops", 1, "setpoint_from"), None)), (), 'loops[0].actuator: is required: '
     'nothing reads loop "level"\'s output (a block\'s input, or a loop\'s setpoint_from or '
     'feedforward)'),
    ((OUTER_RANGE, (("loops", 1, "sensor"), "ff")), (), 'loops[1].sensor: block "ff" has no '
     '"range": a loop\'s sensor needs a valid range (give the block a "range": [min, max])'),
    (("loops", 1, "setpoint_from"), None, "loops[0].controller.out_min: is required for a loop "
     "without an actuator (the range of its output signal)"),
    (("loops", 0, "controller"), {"type": "onoff", "setpoint": 100}, "loops[0].actuator: is "
     "required (only a pid loop's output can be a signal without an actuator channel)"),
    (("blocks", 3), {"name": "mine", "type": "user", "module": "my-pi"}, 'blocks[3].module: must '
     'be a module name (1 to 32 ASCII letters, digits or _, not starting with a digit: the file '
     '<module>.py next to the config), got "my-pi"'),
    (((("blocks", 3), {"name": "mine", "type": "user", "module": "mypi", "inputs": ["h1"],
                       "outputs": ["a", "b"]}),
      (("blocks", 4), {"name": "use", "type": "limit", "input": "mine.c", "min": 0, "max": 1}),
      (("tasks", 0, "order"), ["ff", "level", "feed", "mean", "split", "mine", "use"])),
     (), 'blocks[4].input: user block "mine" has no output "c" (outputs: a, b)'),
    (("blocks", 3), {"name": "mine", "type": "user", "module": "mypi", "actuators": {"x": "spare"}},
     'blocks[3].actuators.x: no output "x" (outputs: out)'),
    (("blocks", 3), {"name": "mine", "type": "user", "module": "mypi", "params": {"k": [1, "a"]}},
     'blocks[3].params.k[1]: must be a number, got "a"'),
    (("loops", 0, "controller", "out_max"), 500, "loops[0].controller.out_max: must be within "
     "the setpoint range of the loop that follows it [13, 198] (its sensor's valid range), got "
     "500"),
]


def _mutate(d: dict, path: tuple, value) -> dict:
    d = copy.deepcopy(d)
    if path and isinstance(path[0], tuple):       # several changes
        for p, v in path:
            d = _mutate(d, p, v)
        return d
    if not path:
        return d
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is None:
        del node[path[-1]]
    elif isinstance(node, list) and path[-1] == len(node):
        node.append(value)
    else:
        node[path[-1]] = value
    return d


def _message(d: dict) -> str:
    try:
        config.validate(d)
        return "OK"
    except config.ConfigError as e:
        return str(e)


@pytest.mark.parametrize("path, value, want", CASES, ids=[str(c[2])[:40] for c in CASES])
def test_each_mistake_is_named_with_its_path(path, value, want):
    assert _message(_mutate(BASE, path, value)) == want


def test_micropython_gives_the_same_messages(mpy, tmp_path):
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([_mutate(BASE, p, v) for p, v, _ in CASES]))
    script = f"""
import json
from cyphy_node import config
with open({str(cases)!r}) as f:
    CASES = json.load(f)
for d in CASES:
    try:
        config.validate(d)
        print(json.dumps("OK"))
    except config.ConfigError as e:
        print(json.dumps(str(e)))
"""
    # (a heap to compile config.py and cfggraph.py from source; a node imports them as .mpy)
    got = [json.loads(line) for line in mpy(script, heap="512K").splitlines()]
    assert got == [want for _, _, want in CASES]


def test_the_validated_config_validates_again_and_fills_defaults():
    cfg = config.validate(copy.deepcopy(BASE)).to_dict()
    assert config.validate(json.loads(json.dumps(cfg))).to_dict() == cfg
    level = cfg["loops"][0]
    assert level["actuator"] is None and level["rate_hz"] == 10
    # a cascade's outer loop: its output range and units are the inner's setpoint's
    assert (level["controller"]["out_min"], level["controller"]["out_max"]) == (13, 198)
    assert level["output_units"] == "mm"
    assert cfg["blocks"][0] == {"name": "ff", "type": "feedforward", "input": "h2", "gain": 0.01,
                                "bias": 0, "lead_s": 0, "lag_s": 0, "range": None, "units": "",
                                "actuator": None}


def test_a_config_without_blocks_is_read_as_before():
    d = json.loads(open(config.__file__.replace("lib/cyphy_node/config.py",
                                                "config.example.json")).read())
    cfg = config.validate(d).to_dict()
    assert "blocks" not in cfg and "tasks" not in cfg
    assert "setpoint_from" not in cfg["loops"][0]
