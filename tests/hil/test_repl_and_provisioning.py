"""The REPL while the loop runs (also through pytest-embedded's dut), and provisioning."""

import time

import pytest


def ticks(node) -> int:
    return int(node.exec("print(node.loop('oven').ticks)"))


def test_repl_while_the_loop_runs(node):
    t0 = ticks(node)
    assert node.exec("print(6 * 7)").strip() == "42"
    time.sleep(0.5)
    assert ticks(node) >= t0 + 3                  # 10 Hz: still ticking between REPL uses
    node.exec("node.set('oven.setpoint', 45.0)")
    with node.connect() as n:                     # and the protocol sees the same node
        assert n.get("oven.setpoint") == 45.0


def test_provisioning_round_trip(node):
    from cyphy.device import Device
    from cyphy.provision import provision

    cfg = dict(node.config, name="renamed-oven")
    with Device.open(node.port) as dev:
        first = provision(dev, "renamed-oven", cfg, key_hex=node.key_hex)
        again = provision(dev, "renamed-oven", cfg, key_hex=node.key_hex)
    assert first["config"]["action"] == "written"
    assert again["config"]["action"] == "unchanged" and again["secrets"]["action"] == "unchanged"
    assert not again["key"]["changed"]
    node.name, node.config = "renamed-oven", cfg
    node.reset()
    with node.connect() as n:
        assert n.name == "renamed-oven"
