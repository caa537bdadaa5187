"""params.py on CPython: a tune result's setpoint weight is applied and persisted with its
gains (autotune's rules choose b in 0..1: docs/control.md, "Relay autotune"), and a run of
a classical rule or a forgotten tuning returns b to what p_on_m says."""

from __future__ import annotations

import json

from test_autotune import DONE, _node, rules


def _finish(node, lp, result):
    node.autotune(lp.name, high=80, low=20, hyst=0.5)
    lp.tuner.status = DONE
    lp.tuner.result = lambda: dict(result)
    node._check_tuners()


GOOD = {"ok": True, "stable": True, "reason": "", "rule": "fopdt", "why": "test", "kp": 4.0,
        "ki": 0.05, "kd": 20.0, "d_filter": 0.5, "p_on_m": True, "sp_weight": 0.6,
        "rules": rules(10.0, 50.0)}


def test_the_setpoint_weight_is_applied_persisted_and_forgotten(tmp_path, monkeypatch):
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    _finish(node, lp, GOOD)
    assert lp.pid.sp_weight == 0.6 and lp.pid.get_tunings() == (4.0, 0.05, 20.0)
    saved = json.loads((tmp_path / "autotune.json").read_text())
    assert saved[lp.name]["sp_weight"] == 0.6
    again = _node(tmp_path, monkeypatch)                 # a reset: applied at boot
    lp2 = again.loops[0]
    assert lp2.pid.sp_weight == 0.6 and lp2.state()["sources"]["kp"] == "tune"
    assert again.forget_tuning(lp2.name) == ["kp", "ki", "kd"]
    assert lp2.pid.sp_weight == (0.0 if lp2.cfg_tuning[4] else 1.0)


def test_a_classical_rule_keeps_p_on_error(tmp_path, monkeypatch):
    node = _node(tmp_path, monkeypatch)
    lp = node.loops[0]
    node.autotune(lp.name, high=80, low=20, hyst=0.5, rule="ziegler_nichols")
    lp.tuner.status = DONE
    lp.tuner.result = lambda: dict(GOOD)
    node._check_tuners()
    assert lp.pid.sp_weight == 1.0
    assert "sp_weight" not in node.tune_status(lp.name)["result"]
