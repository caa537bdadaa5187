"""Closed-loop runs of the real firmware (Node, its loops, tasks and blocks) against the
sim's own plant models (boards/sim/rom/_plant.py) on CPython, in virtual time.

PlantBoard stands where the sim board would: an ADC pin reads a plant signal scaled onto
its wiring's range (an output of the plant through `measure`, or a load through
`get_input`: a sensor of a measured disturbance), a PWM or DAC pin drives a plant input.
run() steps the node and the plant in lockstep. The full sim (MicroPython, the sim
board's calibrated ADC, the supervisor's virtual clock) runs the same configs in
tests/sim/test_graph_sim.py; this harness makes the many block-level closed loops fast.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "firmware" / "lib", REPO / "boards" / "sim" / "rom"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import _plant  # noqa: E402
from cyphy_node import config  # noqa: E402
from cyphy_node.node import Node  # noqa: E402
from cyphy_node.sched import VirtualClock  # noqa: E402

MV_FULL = 2450  # an ADC pin spans 0..2.45 V over its wiring's range (ESP32 at 11 dB)


def patch_time(monkeypatch, now_ms: list[int]) -> None:
    """MicroPython's time.ticks_* (the node's comms timer) on CPython, on now_ms[0]."""
    monkeypatch.setattr(time, "ticks_ms", lambda: now_ms[0], raising=False)
    monkeypatch.setattr(time, "ticks_add", lambda a, b: (a + b) & ((1 << 30) - 1), raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: ((a - b + (1 << 29)) & ((1 << 30) - 1))
                        - (1 << 29), raising=False)


class PlantBoard:
    mcu = "ESP32"

    def __init__(self, plant, wiring: list[dict]):
        self.clock = VirtualClock(0)
        self.plant = plant
        self.wiring = {w["pin"]: w for w in wiring}

    def __getattr__(self, name):
        return getattr(self.clock, name)

    def ticks_us(self) -> int:
        return self.clock.ticks_us()

    def _read(self, signal: str) -> float:
        if signal in self.plant.outputs:
            return self.plant.measure(signal)
        return self.plant.get_input(signal)

    def analog_in(self, pin: int, atten_db: float = 11):
        board, w = self, self.wiring[pin]

        class Adc:
            min_mv, range_mv = 150, 2450    # ESP32 at 11 dB, calibrated (boards/esp32/pins.py)

            def read_uv(self) -> int:
                lo, hi = w["range"]
                v = (board._read(w["signal"]) - lo) / (hi - lo)
                return max(0, int(round(v * MV_FULL * 1000)))
        return Adc()

    def _out(self, pin: int, full: int, value: int):
        # a pin wired to no plant input drives nothing (what it was set to is kept: .r)
        board, w = self, self.wiring.get(pin)

        class Out:
            def set(self, r: int) -> None:
                self.r = r
                if w is not None:
                    lo, hi = w["range"]
                    board.plant.set_input(w["signal"], lo + (hi - lo) * r / full)
            duty_u16 = write_u8 = write = set
        o = Out()
        o.set(value)
        return o

    def pwm_out(self, pin: int, freq_hz: int = 1000, duty_u16: int = 0):
        return self._out(pin, 65535, duty_u16)

    def dac_out(self, pin: int, value: int = 0):
        return self._out(pin, 255, value)

    def digital_out(self, pin: int, value: int = 0):
        return self._out(pin, 1, value)

    def watchdog(self, timeout_ms: int):
        class Wdt:
            def feed(self) -> None:
                pass
        return Wdt()


def adc(name: str, pin: int, lo: float, hi: float, units: str, valid=None) -> dict:
    """A channel reading a PlantBoard pin whose wiring range is [lo, hi]."""
    return {"name": name, "pin": pin, "kind": "adc", "units": units,
            "scale": {"mv_min": 0, "mv_max": MV_FULL, "eng_min": lo, "eng_max": hi},
            "valid": valid or [lo + (hi - lo) * 0.07, hi - (hi - lo) * 0.01]}


class Rig:
    """A node built from a config dict on a PlantBoard; run(seconds) in virtual time."""

    def __init__(self, cfg: dict, plant_spec: dict, wiring: list[dict], tmp: Path,
                 now_ms: list[int], seed: int = 1):
        self.plant = _plant.make(plant_spec, seed)
        self.board = PlantBoard(self.plant, wiring)
        self.now_ms = now_ms
        self.node = Node(config.validate(cfg), self.board, watchdog_ms=0,
                         fault_path=str(tmp / "faults.log"), tune_path=str(tmp / "tune.json"))
        self.t = 0.0
        self.node._prepare()
        self.node._running = True

    def run(self, seconds: float, every: float | None = None, probe=None) -> list:
        """Advance; probe(t) sampled every `every` s of plant time (list of its results)."""
        rows = []
        end = self.t + seconds
        nxt = self.t
        while self.t < end - 1e-9:
            # as the node's timer in the background: a pass every period_us at least
            w = min(max(self.node.run_once(), 1000), self.node.period_us)
            self.board.clock.advance(w)
            self.plant.step(w / 1e6)
            self.t += w / 1e6
            self.now_ms[0] = int(self.t * 1000)
            if probe is not None and self.t >= nxt - 1e-9:
                rows.append(probe(self.t))
                nxt += every
        return rows
