"""A node under test: the same object whether it is a sim node or a board on a port.

Setting one up is what a user does by hand: deploy the firmware (`cyphy deploy`), provision
a name, config and key (`cyphy provision`), reset, and wait for main.py to report its
loops running. Then tests talk to it through the protocol (connect()), the REPL (exec()),
or record a run on the node itself (record(): exact on virtual time)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import Response

BOOTED = re.compile(rb"cyphy: node (\S+) running (\d+) loop")
BANNER_END = b'Type "help()" for more information.'


class HilError(Exception):
    pass


@dataclass
class HilNode:
    port: str                      # the serial device (a sim node's PTY symlink)
    name: str                      # the node's config name
    key_hex: str
    config: dict
    sim_name: str | None = None    # the sim node's name, None on hardware
    home: Path | None = None       # the sim's CYPHY_HOME
    virtual_time: bool = False
    user_dir: Path | None = None   # where the config's user blocks' modules are
    boot_log: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"serial://{self.port}"

    @property
    def sim(self) -> bool:
        return self.sim_name is not None

    @property
    def ip(self) -> str | None:
        """The sim node's UDP address (its Wi-Fi), None on hardware (ask the node)."""
        if not self.sim:
            return None
        from cyphy.sim.nodes import Node

        return Node.named(self.sim_name, self.home).config().get("ip")

    # ---- setup ----

    def install(self, wifi: tuple[str, str] | None = None, extra_secrets: dict | None = None) -> None:
        """Deploy the firmware and provision name, config and key; then reset and wait
        for the loops (what `cyphy deploy` and `cyphy provision` do). extra_secrets:
        more of /secrets.json, e.g. {"peer_keys": {ip: hex}} for a follower."""
        import json

        from cyphy.deploy import deploy
        from cyphy.device import Device
        from cyphy.provision import provision

        with Device.open(self.port, timeout=30) as dev:
            deploy(dev)
            provision(dev, self.name, self.config, wifi=wifi, key_hex=self.key_hex,
                      user_dir=self.user_dir)
            if extra_secrets:
                s = json.loads(dev.read("/secrets.json") or b"{}")
                s.update(extra_secrets)
                dev.write_atomic("/secrets.json", json.dumps(s).encode())
        self.reset()

    def reset(self, timeout: float = 60.0) -> str:
        """Hard reset (machine.reset(), from the raw REPL) and wait until main.py reports
        the loops running."""
        from cyphy.rawrepl import RawRepl, ReplError

        try:
            with RawRepl(self.port, exclusive=False) as repl:
                repl.enter()
                # the ESP32 ROM's lines ("rst:0xc (SW_CPU_RESET)..."), main.py's output,
                # then MicroPython's banner
                seen = repl.hard_reset(timeout, until=BANNER_END)
        except ReplError as e:
            raise HilError(str(e)) from None
        self.boot_log = seen.decode(errors="replace")
        if BANNER_END not in seen:
            raise HilError(f"{self.port}: no {BANNER_END.decode()!r} from the node within "
                           f"{timeout:.0f} s; it said: {self.boot_log[-400:]!r}")
        if not BOOTED.search(seen):
            raise HilError(f"{self.port}: the node booted without its loops running:\n"
                           + self.boot_log[-600:])
        return self.boot_log

    # ---- use ----

    def connect(self):
        """A protocol session (cyphy.api.Node) over the serial console."""
        from cyphy.api import connect

        return connect(self.url, key=self.key_hex)

    def tune(self, loop: str, **options: Any) -> dict:
        """The relay autotune of loop over the protocol, as `cyphy tune` runs it
        (cyphy.api.Node.tune: rule, amplitude, hysteresis, timeout_s, apply, progress): the
        result. It runs in the node's real time (on virtual time the node's clock stands
        still while it waits for the host: use node.exec("node.autotune(...)") there)."""
        with self.connect() as n:
            return n.tune(loop, **options)

    def set_param(self, path: str, value: float) -> None:
        """A block's parameter by name ("ratio1.ratio", a user block's "pi.setpoint") over
        the protocol, as `cyphy set URL path=value` (cyphy.api.Node.set_param: refused with
        the node's reason)."""
        with self.connect() as n:
            n.set_param(path, value)

    def get(self, path: str) -> Any:
        """A loop's value ("oven.setpoint"), a block's or device channel's state ("pi") over
        the protocol, as `cyphy get` (cyphy.api.Node.get)."""
        with self.connect() as n:
            return n.get(path)

    def exec(self, code: str, timeout: float = 60.0) -> str:
        """Run code at the REPL (the loops keep running); its output."""
        from cyphy.device import Device

        with Device.open(self.port, timeout=timeout) as dev:
            return dev.exec(code, timeout)

    def record(self, seconds: float, period_ms: int | None = None, before: str = "") -> dict[str, Response]:
        """Record every loop on the node itself for `seconds` of the node's time (exact
        and repeatable on virtual time), after running `before` (e.g. a setpoint change)
        at its start, once every loop has ticked. The first sample is taken right after
        `before` (t = 0: the instant of a step), then one each period_ms (default: the
        fastest loop's period). {loop: Response}, times in s from the start."""
        if period_ms is None:
            period_ms = min(self.period_ms(name) for name in self.loops())
        code = ("from cyphy_node.record import record, ticked\nticked(node)\n"
                + (before + "\n" if before else "")
                + f"record(node, {seconds!r}, {int(period_ms)})\n")
        budget = 60.0 + (0 if self.virtual_time else seconds * 1.5)
        signals = self.exec("print(' '.join([n for n, _ in node.signals()]))").split()
        out = self.exec(code, timeout=budget)
        return parse_recording(out, self.loops(), signals)

    def step(self, loop: str, setpoint: float, seconds: float, period_ms: int | None = None) -> Response:
        """Step loop's setpoint and record its response, from the instant of the step, one
        sample each period_ms (default: the loop's own period)."""
        if period_ms is None:
            period_ms = self.period_ms(loop)
        return self.record(seconds, period_ms, before=f"node.set({loop + '.setpoint'!r}, {setpoint!r})")[loop]

    def loops(self) -> list[str]:
        return [lp["name"] for lp in self.config["loops"]]

    def period_ms(self, loop: str) -> int:
        """A loop's control period in ms (from its rate_hz in the config), at least 1."""
        for lp in self.config["loops"]:
            if lp["name"] == loop:
                return max(1, round(1000 / lp["rate_hz"]))
        raise HilError(f"no loop {loop!r} in the config; it has {', '.join(self.loops())}")

    def state(self) -> dict[str, Any]:
        import json

        return json.loads(self.exec("import json\nprint(json.dumps(node.state()))"))


def parse_recording(text: str, loops: list[str], signals: list[str] = ()) -> dict[str, Response]:
    """cyphy_node.record's lines (t_ms, sp y u status per loop, then each signal's value)
    as Responses: a loop's, and a signal's (a block or device channel: its values as the
    measurement, no setpoint, NaN, and no output)."""
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    out: dict[str, Response] = {}
    for r in rows:
        if len(r) != 1 + 4 * len(loops) + len(signals):
            raise HilError(f"unexpected recording line: {' '.join(r)!r}")
    t_all = [int(r[0]) / 1000 for r in rows]
    for k, name in enumerate(signals):
        y = [int(r[1 + 4 * len(loops) + k]) / 1000 for r in rows]
        out[name] = Response(t_all, [float("nan")] * len(y), y, [], loop=name)
    for i, name in enumerate(loops):
        t, sp, y, u = [], [], [], []
        for r in rows:
            t.append(int(r[0]) / 1000)
            j = 1 + 4 * i
            sp.append(int(r[j]) / 1000)
            y.append(int(r[j + 1]) / 1000)
            u.append(int(r[j + 2]) / 1000)
        out[name] = Response(t, sp, y, u, loop=name)
    return out
