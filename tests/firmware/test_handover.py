"""Issue 15, item 3: bumpless, always. The output's first ticks after every hand-over: a
mode change (manual -> auto, auto -> manual), a gain change (set, set --save, a tune's
gains forgotten), and a reboot with persisted gains. While something else drives the
actuator the PID tracks the measurement and the output applied; when it takes over, it
continues from that output: no derivative kick, no jump to a stale or recomputed output.
(The tune's own hand-over: test_autotune.py::test_the_hand_over_after_a_tune_is_bumpless.)

The real firmware (Node, ControlLoop, PID) on CPython with a board whose ADC the test
moves; run with -s to see the ticks."""

from __future__ import annotations

import json

import pytest
from test_autotune import _node

# An output step the controller's own action explains, per tick, milli-units (% x 1000):
# what P and D ask of a measurement moving 0.1 degC per tick, and I of an error of 10 degC
SMOOTH = 1500


def ticks(lp, board, n=6, ramp_uv=0):
    outs = []
    for _ in range(n):
        board.uv += ramp_uv
        lp.tick()
        outs.append(lp.u)
    return outs


def steps(before, outs):
    return [abs(b - a) for a, b in zip([before] + outs, outs)]


def show(what, before, outs):
    print(f"{what}: applied before {before / 1000:.3f} %, first ticks "
          + ", ".join(f"{u / 1000:.3f}" for u in outs))


@pytest.fixture
def oven(tmp_path, monkeypatch):
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    lp.pid.set_tunings(4.0, 0.05, 20.0)              # strong P and D: any kick would show
    node.set("%s.setpoint" % lp.name, 60.0)
    node.board.uv = 900000                           # ~55 degC (P on error: 20 %)
    ticks(lp, node.board, 60, ramp_uv=100)
    return node, lp


def test_manual_to_auto_and_back(oven):
    node, lp = oven
    b = node.board
    node.set("%s.output" % lp.name, 20.0)            # manual at 20 %, far from what P asks
    ticks(lp, b, 20, ramp_uv=-300)                   # the measurement moves meanwhile
    before = lp.u
    assert before == 20000
    node.set("%s.mode" % lp.name, "auto")
    outs = ticks(lp, b, ramp_uv=-300)
    show("manual -> auto", before, outs)
    s = steps(before, outs)
    assert s[0] < 500 and max(s) < SMOOTH, (before, outs, s)
    # auto -> manual without an output: held where it was
    before = lp.u
    node.set("%s.mode" % lp.name, "manual")
    outs = ticks(lp, b, ramp_uv=-300)
    show("auto -> manual", before, outs)
    assert outs == [before] * len(outs)


@pytest.mark.parametrize("how", ["set", "set --save", "set_many kp+kd"])
def test_gain_changes(oven, how):
    node, lp = oven
    b = node.board
    before = lp.u
    if how == "set":
        node.set("%s.kp" % lp.name, 12.0)
    elif how == "set --save":
        node.set_many([("%s.kp" % lp.name, 0.5)], save=True)
    else:
        node.set_many([("%s.kp" % lp.name, 10.0), ("%s.kd" % lp.name, 80.0)])
    outs = ticks(lp, b, ramp_uv=100)
    show(how, before, outs)
    s = steps(before, outs)
    assert s[0] < SMOOTH and max(s) < 3 * SMOOTH, (before, outs, s)


def test_forgetting_a_tuning_returns_to_the_config_bumplessly(oven):
    node, lp = oven
    b = node.board
    node.set_many([("%s.kp" % lp.name, 9.0), ("%s.ki" % lp.name, 0.2)], save=True)
    ticks(lp, b, 10, ramp_uv=100)
    before = lp.u
    assert node.forget_tuning(lp.name) == ["kp", "ki"]
    assert lp.pid.get_tunings()[:2] == tuple(lp.cfg_tuning[:2])
    outs = ticks(lp, b, ramp_uv=100)
    show("forget tuning", before, outs)
    s = steps(before, outs)
    assert s[0] < SMOOTH and max(s) < 3 * SMOOTH, (before, outs, s)


def test_a_reboot_runs_the_persisted_gains_from_its_first_tick(tmp_path, monkeypatch):
    """After a reset the actuator is at its fail-safe value and the PID starts fresh: the
    persisted gains (not the config's) from the first tick, and no derivative kick (D is
    0 on the first tick: there is no previous measurement). The P term then acts on the
    error at once, as on a setpoint step; P on measurement (`p_on: measurement`, or a
    tune's choice) avoids even that."""
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    node.set_many([("%s.kp" % lp.name, 2.0), ("%s.kd" % lp.name, 40.0)], save=True)
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved[lp.name]["saved"] == {"kp": 2.0, "kd": 40.0}
    node2 = _node(tmp_path, monkeypatch)            # a new Node on the same flash: a reset
    lp2 = node2.loops[0]
    assert lp2.pid.get_tunings()[0] == 2.0 and lp2.pid.get_tunings()[2] == 40.0
    assert lp2.state()["sources"]["kp"] == "saved"
    before = lp2.u                                   # the fail-safe output
    node2.board.uv = 200000                          # 12 degC, the config's setpoint 20
    outs = []
    ds = []
    for _ in range(6):
        node2.board.uv += 100
        lp2.tick()
        outs.append(lp2.u)
        ds.append(lp2.pid.d)
    show("reboot with persisted gains", before, outs)
    assert ds[0] == 0, ds                            # no derivative kick
    # the first output is what the persisted gains ask: P = kp * e (e ~ 8 degC), not the
    # config's kp; then smooth
    e = lp2.pid.e
    assert abs(outs[0] - 2.0 * e) < 2.0 * abs(e) * 0.2 + 500, (outs, e)
    s = steps(outs[0], outs[1:])
    assert max(s) < SMOOTH, (outs, s)


def test_manual_to_auto_far_from_the_setpoint(oven):
    """P alone asks for more than the output range (35 degC too hot, kp 4: -140 %): the
    integral cannot hold the difference within its limits, so a transfer bias takes the
    rest and fades with min(Ti, pid.TRANSFER_S): the output continues from the manual one
    and moves to what the PID asks without a step, within seconds."""
    node, lp = oven
    b = node.board
    node.set("%s.output" % lp.name, 20.0)
    b.uv = 1550000                                   # ~95 degC: far above the setpoint
    ticks(lp, b, 40)
    before = lp.u
    node.set("%s.mode" % lp.name, "auto")
    from cyphy_node.pid import TRANSFER_S

    tb_ticks = int(min(4.0 / 0.05, TRANSFER_S) / 0.1)  # Ti = kp / ki = 80 s, 10 Hz
    outs = ticks(lp, b, 1)
    b0 = lp.pid.bias
    assert b0 != 0
    outs += ticks(lp, b)
    show("manual -> auto, far", before, outs)
    s = steps(before, outs)
    # the first output is the manual one; then a ramp: no step larger than the bias's own
    # fading per tick (|bias| / Tb) plus the controller's own moves
    assert s[0] < 500 and max(s) < abs(b0) / tb_ticks + SMOOTH, (before, outs, s, b0)
    for _ in range(5 * tb_ticks):
        lp.tick()
    assert abs(lp.pid.bias) < abs(b0) * 0.01         # e**-5: gone; the PID's own output (too hot)
    assert lp.u == 0
