"""`make demo`: the main job on a sim node, with the commands a user types.

    .venv/bin/python tools/demo.py --seconds 30

1. power on a sim node wired to an oven (a fast thermal plant, so that 30 s show a step);
2. `cyphy flash`: MicroPython's partition table and the cyphy filesystem (firmware as
   .mpy + config), through the sim ROM's download mode, with esptool;
3. `cyphy provision`: the node's name and a fresh key (kept on the host);
4. `cyphy set`: a setpoint step, acknowledged over the authenticated protocol;
5. `cyphy monitor`: live telemetry until the time is up, recorded to CSV;
6. `cyphy plot`: the run as a PNG.

Everything lives under out/demo/ (CYPHY_HOME=out/demo/home), never in the user's own
cyphy data directory, and the node is powered off at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "demo"
HOME = OUT / "home"
NODE = "demo"
CYPHY = str(Path(sys.executable).with_name("cyphy"))

# The oven of ../shared/anchors.md, made ten times faster so that a short demo shows it
# heat: gain 0.9 degC/%, tau 16 s, dead time 1.2 s; heater PWM on pin 25, sensor on 34.
BENCH = {
    "plant": {"type": "fotd", "gain": 0.9, "tau_s": 16, "dead_time_s": 1.2, "ambient": 20.0,
              "noise": {"std": 0.05}},
    "wiring": [
        {"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150], "volts": [0.0, 2.45]},
        {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]},
    ],
    "seed": 1,
}
CONFIG = {
    "schema": 1, "name": "demo-oven", "comms_timeout_ms": 0,
    "channels": [
        {"name": "temp", "pin": 34, "kind": "adc", "units": "degC", "valid": [10, 149],
         "scale": {"mv_min": 0, "mv_max": 2450, "eng_min": 0, "eng_max": 150}},
        {"name": "heater", "pin": 25, "kind": "pwm", "freq_hz": 1000, "range": [0, 100],
         "units": "%", "failsafe": 0},
    ],
    "loops": [
        {"name": "oven", "rate_hz": 10, "sensor": "temp", "actuator": "heater",
         "filter": {"type": "lowpass", "tau_s": 0.5},
         "controller": {"type": "pid", "kp": 4.0, "ki": 0.25, "kd": 0.0, "out_min": 0,
                        "out_max": 100, "setpoint": 20.0},
         "alarms": {"high": 90, "low": 12, "hysteresis": 1}},
    ],
}


def step(title: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if title:
        print(f"\n\033[1m== {title}\033[0m", flush=True)
    print(f"$ cyphy {' '.join(args)}", flush=True)
    p = subprocess.run([CYPHY, *args], env=dict(os.environ, CYPHY_HOME=str(HOME)))
    if check and p.returncode != 0:
        raise SystemExit(f"demo: `cyphy {args[0]}` failed (exit {p.returncode}); the node's "
                         f"console is in {HOME / 'sim' / NODE / 'console.log'}")
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the demo runs")
    a = ap.parse_args()
    t0 = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(BENCH, indent=1))
    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=1))
    step("power off and erase any earlier demo node", ["sim", "stop", NODE], check=False)
    step("", ["sim", "erase", NODE], check=False)
    try:
        step("power on a sim ESP32 wired to an oven",
             ["sim", "start", NODE, "--bench", str(OUT / "bench.json")])
        step("flash: partition table + filesystem (firmware, config) with esptool",
             ["flash", "--port", f"sim://{NODE}", "--config", str(OUT / "config.json")])
        step("provision: a name and a fresh key (kept in out/demo/home/keys)",
             ["provision", "--port", f"sim://{NODE}", "--name", "demo-oven", "--new-key", "--reset"])
        step("a setpoint step, acknowledged by the node",
             ["set", f"sim://{NODE}", "oven.setpoint=60"])
        left = max(5.0, a.seconds - (time.monotonic() - t0) - 3)
        step(f"live telemetry for {left:.0f} s (recorded to out/demo/run.csv)",
             ["monitor", f"sim://{NODE}", "--seconds", f"{left:.0f}", "--period-ms", "200",
              "--csv", str(OUT / "run.csv")])
        step("the run as a picture", ["plot", str(OUT / "run.csv"), "-o", str(OUT / "run.png")])
    finally:
        step("power off", ["sim", "stop", NODE], check=False)
    print(f"\ndemo: done in {time.monotonic() - t0:.0f} s; see out/demo/run.png and "
          f"out/demo/home/sim/{NODE}/console.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
