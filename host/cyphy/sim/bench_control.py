"""Test equipment for sim nodes, from the host: the plant (true state, disturbances, sensor
faults) and the serial line (dropped, corrupted and delayed bytes).

    from cyphy.sim.bench_control import SimBench, SerialLinkFaults

    with SimBench.connect("oven") as bench:       # a running node started with --bench
        bench.state()["signals"]["temperature"]   # the true value, not the sensor's
        bench.set_input("ambient", 15)            # a load / disturbance input, now
        bench.set_input("ambient", 15, at_s=300)  # ... or at plant time 300 s
        bench.sensor_fault("temperature", "stuck", value=80)
        bench.sensor_fault("temperature", "noise", std=2.0)
        bench.sensor_fault("temperature", "offset", value=-3)
        bench.clear_faults()

    with SerialLinkFaults.connect("oven") as link:
        link.set(drop=0.01, corrupt=0.001, delay_ms=20, seed=1, direction="both")
        link.stats()["to_node"]["dropped"]
        link.clear()

Both talk to the node's supervisor over `$CYPHY_HOME/sim/NAME/control.sock` (JSON lines;
docs/boards.md, "Test equipment"). Plant requests are served inside the node process, at
its own time: while it waits for console input (the REPL prompt, input()) and, on a
real-time node, while user code sleeps. A node busy in code that never waits answers
when it next does; until then a request waits (up to `timeout`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from cyphy.sim.equipment import socket_path, unix_address
from cyphy.sim.nodes import Node, SimError

DEFAULT_TIMEOUT_S = 10.0


class BenchControlError(SimError):
    """The node refused a request, or could not be reached; the message says why."""


class ControlChannel:
    """One connection to a running node's control socket."""

    def __init__(self, node_name: str, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        node = Node.named(node_name, home)
        self.name = node_name
        self.timeout = timeout
        if not node.exists():
            raise BenchControlError(f"no sim node named {node_name!r} (see: cyphy sim list)")
        if node.state() is None:
            raise BenchControlError(f"sim node {node_name} is not running (start it: cyphy sim start {node_name})")
        path = socket_path(node.root)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr, fd = unix_address(path)
        deadline = time.monotonic() + 5.0  # the socket opens once the node has booted
        try:
            while True:
                try:
                    self.sock.connect(addr)
                    break
                except (FileNotFoundError, ConnectionRefusedError) as e:
                    if time.monotonic() > deadline or node.state() is None:
                        self.sock.close()
                        raise BenchControlError(f"sim node {node_name}: cannot reach its control socket "
                                                f"{path} ({e.strerror}); is it running?") from None
                    time.sleep(0.05)
        finally:
            if fd is not None:
                os.close(fd)
        self.rbuf = bytearray()
        self.next_id = 1
        self.info = self.request("ping")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "ControlChannel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict:
        """Send one request; its answer (a dict with "ok": true), or BenchControlError."""
        rid = self.next_id
        self.next_id += 1
        line = json.dumps({"op": op, "id": rid, **fields}, allow_nan=False) + "\n"
        try:
            self.sock.sendall(line.encode())
        except OSError as e:
            raise BenchControlError(f"sim node {self.name}: control socket closed ({e}); did the node stop?") from None
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            i = self.rbuf.find(b"\n")
            if i >= 0:
                ans = json.loads(bytes(self.rbuf[:i]))
                del self.rbuf[: i + 1]
                if ans.get("id") != rid:
                    continue  # the late answer to a request that timed out
                if not ans.get("ok"):
                    raise BenchControlError(f"sim node {self.name}: {op}: {ans.get('error', 'refused')}")
                ans.pop("id", None)
                ans.pop("ok", None)
                return ans
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchControlError(
                    f"sim node {self.name}: no answer to {op} within {limit:g} s. Plant requests are "
                    "served when the node waits for console input or (real time) sleeps: is it busy "
                    "in code that never waits?")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                raise BenchControlError(f"sim node {self.name}: control socket failed: {e}") from None
            if not data:
                raise BenchControlError(f"sim node {self.name}: the control socket closed (did the node stop?)")
            self.rbuf += data


class SimBench:
    """The plant of a running sim node that has a bench (`cyphy sim start --bench`)."""

    def __init__(self, channel: ControlChannel) -> None:
        self.channel = channel
        if not channel.info.get("bench"):
            channel.close()
            raise BenchControlError(f"sim node {channel.name} has no bench: start it with --bench FILE "
                                    "(docs/plants.md) to wire its pins to a plant")

    @classmethod
    def connect(cls, node_name: str, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> "SimBench":
        return cls(ControlChannel(node_name, home, timeout))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SimBench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state(self) -> dict:
        """The plant as the model knows it, at the node's current time:

        {"type": "fotd", "time_s": node clock (s since power-on), "plant_time_s": plant time
         (s since this boot: the plant starts over at every reset), "virtual_time": bool,
         "signals": {"temperature": true value, "heater": ..., "ambient": ...},
         "sensors": {"temperature": {"reading": what the sensor gave last (what the ADC
                     shows; None before the first reading), "fault": "none"|"stuck"|"noise"|
                     "offset", "value"/"std": the fault's parameter}},
         "pins": {"34": {"kind": "adc", "signal": "temperature", "uv": microvolts}, "25":
                  {"kind": "pwm", "signal": "heater", "fraction": duty}},
         "pending": scheduled disturbances not applied yet}"""
        return self.channel.request("plant.state")

    def true(self, signal: str) -> float:
        """One signal's true value now."""
        return self.state()["signals"][signal]

    def set_input(self, name: str, value: float, at_s: float | None = None) -> dict:
        """Set a load (e.g. "ambient", "load_torque", "valve") or an input no pin drives,
        now or at plant time at_s. Returns the state after it."""
        return self._plant("plant.set", input=name, value=value, at_s=at_s)

    def set_param(self, name: str, value: float, at_s: float | None = None) -> dict:
        """Change a model parameter that may change at run time (e.g. "tau_s", "gain")."""
        return self._plant("plant.set", param=name, value=value, at_s=at_s)

    def sensor_fault(self, sensor: str, kind: str, at_s: float | None = None, **params: float) -> dict:
        """A sensor fault: kind "stuck" (value= optional: else it holds its last reading),
        "noise" (std=), "offset" (value= added to the true value) or "none"."""
        return self._plant("plant.sensor", sensor=sensor, fault=kind, at_s=at_s, **params)

    def clear_faults(self) -> dict:
        """Every sensor healthy again (scheduled faults still to come stay scheduled)."""
        return self._plant("plant.clear")

    def _plant(self, op: str, **fields: Any) -> dict:
        return self.channel.request(op, **{k: v for k, v in fields.items() if v is not None})


class SerialLinkFaults:
    """Faults on a running sim node's serial line (the wire between its port and its CPU)."""

    def __init__(self, channel: ControlChannel) -> None:
        self.channel = channel

    @classmethod
    def connect(cls, node_name: str, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> "SerialLinkFaults":
        return cls(ControlChannel(node_name, home, timeout))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SerialLinkFaults":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set(self, drop: float = 0.0, corrupt: float = 0.0, delay_ms: float = 0, seed: int = 1,
            direction: str = "both") -> dict:
        """Per byte: lost with probability drop, else one random bit flipped with
        probability corrupt; then held delay_ms. direction: "both", "to_node" (host ->
        node) or "from_node". Replaces that direction's settings and restarts its PRNG
        from seed. Returns the settings of both directions."""
        return self.channel.request("link.set", drop=drop, corrupt=corrupt, delay_ms=delay_ms, seed=seed,
                                    direction=direction)

    def clear(self) -> None:
        """A clean line again (bytes already delayed still arrive; counters are kept)."""
        self.channel.request("link.clear")

    def stats(self, reset: bool = False) -> dict:
        """{"to_node": {...}, "from_node": {...}}, each with the counters "bytes" (entered
        the line), "dropped", "corrupted", "delayed", "delivered" and the current settings.
        reset=True zeroes the counters after reading them."""
        return self.channel.request("link.stats", reset=reset)


class SimWifi:
    """The radio environment of a running sim node (any node, bench or not): the access
    point it sees, on the air or not. Kept by the node's supervisor across resets.

        with SimWifi.connect("n1") as air:
            air.ap("lab", "secret")      # the only AP: other SSIDs find none, other keys fail
            air.drop()                   # the AP vanishes: the node notices after 6 s
            air.drop(mode="deauth")      # ... or is told at once
            air.restore()                # back on the air: the node reconnects by itself
            air.state()                  # {"wifi": {"ssid", "up", "drop", "password_set"}, ...}

    The password is never echoed back. Before any ap() call the node sees the default
    AP, which any SSID and key join (except "cyphy-sim-noap" and "wrong-password")."""

    def __init__(self, channel: ControlChannel) -> None:
        self.channel = channel

    @classmethod
    def connect(cls, node_name: str, home: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> "SimWifi":
        return cls(ControlChannel(node_name, home, timeout))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SimWifi":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ap(self, ssid: str | None, password: str = "") -> dict:
        """Define the access point (ssid None: back to the default one); it is on the air."""
        if ssid is None:
            return self.channel.request("wifi.ap")
        return self.channel.request("wifi.ap", ssid=ssid, password=password)

    def drop(self, mode: str = "beacon") -> dict:
        """Take the AP off the air: "beacon" (the node notices after its 6 s beacon
        timeout; datagrams are lost meanwhile) or "deauth" (the node is told at once)."""
        return self.channel.request("wifi.drop", mode=mode)

    def restore(self) -> dict:
        """The AP is back on the air."""
        return self.channel.request("wifi.restore")

    def state(self) -> dict:
        return self.channel.request("wifi.state")

    def flash_stall(self, on: bool) -> dict:
        """Whether flash erases and writes stall the node for the chip's time (default on)."""
        return self.channel.request("flash.stall", on=on)
