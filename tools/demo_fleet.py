"""`make demo-fleet`: two sim nodes on an MQTT broker through `cyphy gateway`, and the host
tools over the bus, with the commands a user types.

    .venv/bin/python tools/demo_fleet.py --seconds 30

1. power on, flash and provision two sim nodes wired to ovens (as `make demo` does one);
2. start an MQTT broker: the embedded one (Python, no root, no system service);
3. `cyphy gateway`: both nodes as Sparkplug B devices of the edge node demo/gw1 (the
   gateway holds their serial ports and keys from here on);
4. `cyphy discover --broker`: the devices, from their births;
5. `cyphy set mqtt://...`: a setpoint step on one node, through the broker (a DCMD; the
   node's ACK comes back as the gateway's Command/ok);
6. `cyphy monitor mqtt://...`: that node's telemetry while the gateway streams, to CSV;
   `cyphy get mqtt://...` of the other; `cyphy plot` of the run.

Everything lives under out/demo-fleet/ (CYPHY_HOME there); the gateway, the broker and the
nodes are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BENCH, CONFIG  # noqa: E402 - the one oven of `make demo`

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "demo-fleet"
HOME = OUT / "home"
NODES = ("oven-1", "oven-2")
CYPHY = str(Path(sys.executable).with_name("cyphy"))
ENV = dict(os.environ, CYPHY_HOME=str(HOME))


def step(title: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if title:
        print(f"\n\033[1m== {title}\033[0m", flush=True)
    print(f"$ cyphy {' '.join(args)}", flush=True)
    p = subprocess.run([CYPHY, *args], env=ENV)
    if check and p.returncode != 0:
        raise SystemExit(f"demo-fleet: `cyphy {args[0]}` failed (exit {p.returncode}); logs "
                         f"are in {OUT}")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(proc: subprocess.Popen, log: Path, mark: str, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while mark not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"demo-fleet: {what} did not start: {log.read_text()[-500:]}")
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the monitor runs")
    a = ap.parse_args()
    t0 = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps(BENCH, indent=1))
    procs: list[subprocess.Popen] = []
    port = free_port()
    broker = f"mqtt://127.0.0.1:{port}"
    try:
        for n in NODES:
            cfg = dict(CONFIG, name=f"demo-{n}")
            (OUT / f"{n}.json").write_text(json.dumps(cfg, indent=1))
            step(f"power on, flash and provision sim node {n}", ["sim", "stop", n], check=False)
            step("", ["sim", "erase", n], check=False)
            step("", ["sim", "start", n, "--bench", str(OUT / "bench.json")])
            step("", ["flash", "--port", f"sim://{n}", "--config", str(OUT / f"{n}.json")])
            step("", ["provision", "--port", f"sim://{n}", "--name", f"demo-{n}", "--new-key",
                      "--reset"])
        print(f"\n\033[1m== an MQTT broker (the embedded one: no root, no service) on {broker}\033[0m")
        blog = OUT / "broker.log"
        b = subprocess.Popen([sys.executable, "-m", "cyphy.broker", "--port", str(port)],
                             stdout=open(blog, "wb"), stderr=subprocess.STDOUT, env=ENV)
        procs.append(b)
        wait_for(b, blog, "cyphy.broker: embedded", 30, "the broker")
        print(f"\n\033[1m== the gateway: both nodes as Sparkplug B devices of demo/gw1\033[0m")
        gargs = ["gateway", "--broker", broker, "--group", "demo", "--edge", "gw1",
                 *[f"sim://{n}" for n in NODES]]
        print(f"$ cyphy {' '.join(gargs)} &   (its log: out/demo-fleet/gateway.log)", flush=True)
        glog = OUT / "gateway.log"
        g = subprocess.Popen([CYPHY, *gargs], stdout=subprocess.DEVNULL,
                             stderr=open(glog, "wb"), env=ENV)
        procs.append(g)
        wait_for(g, glog, "demo-oven-2", 60, "the gateway")
        wait_for(g, glog, "demo-oven-1", 60, "the gateway")
        step("the devices on the broker, from their births",
             ["discover", "--broker", broker, "--group", "demo"])
        url1, url2 = (f"{broker}/demo/gw1/demo-{n}" for n in NODES)
        step("a setpoint step through the broker (a DCMD; the node's ACK comes back)",
             ["set", url1, "oven.setpoint=60"])
        step("the other node's loop, through the broker", ["get", url2, "oven"])
        left = max(5.0, a.seconds)
        step(f"live telemetry of demo-oven-1 for {left:.0f} s while the gateway streams "
             f"(recorded to out/demo-fleet/run.csv)",
             ["monitor", url1, "--seconds", f"{left:.0f}", "--csv", str(OUT / "run.csv")])
        step("the run as a picture", ["plot", str(OUT / "run.csv"), "-o", str(OUT / "run.png")])
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for n in NODES:
            step("power off" if n == NODES[0] else "", ["sim", "stop", n], check=False)
    print(f"\ndemo-fleet: done in {time.monotonic() - t0:.0f} s; see out/demo-fleet/run.png, "
          f"gateway.log and broker.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
