"""`cyphy monitor`'s live view: one row per loop, then one per signal (a block's or device
channel's value, protocol 1.2: for nodes that have them), redrawn as telemetry arrives
(rich on a terminal; one line per loop and signal per second otherwise, so that logs stay
readable). Values carry the config's units when the node says them (its info's "units").
While the node is away (a reset, a power cut) the view says so: in the table's title on a
terminal, one line on stderr otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .client import status_names


def _with(value: Any, unit: str) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


class LiveTable:
    def __init__(self, node: Any, refresh_s: float = 0.25) -> None:
        self.node = node
        self.units: dict[str, dict[str, str]] = {}
        self.sessions = 1
        self.samples = 0  # received, over every session
        self.status = ""  # what the monitor is doing when it is not showing telemetry
        self.tty = sys.stdout.isatty()
        self.console = Console()
        self.refresh_s = refresh_s if self.tty else 1.0
        self._last = 0.0
        self._sample: dict | None = None
        self._live: Live | None = None

    def __enter__(self) -> "LiveTable":
        if self.tty:
            self._live = Live(self._table(), console=self.console, auto_refresh=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.__exit__(None, None, None)

    def attach(self, node: Any, units: dict[str, dict[str, str]], sessions: int = 1) -> None:
        """A (new) session with the node: its loops, units, link statistics."""
        self.node = node
        self.units = units
        self.sessions = sessions
        self._sample = None
        self.status = ""

    def say(self, message: str) -> None:
        """An event (the node went away, came back): the table's title, or a line on stderr."""
        self.status = message
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
        else:
            print(f"cyphy monitor: {message}", file=sys.stderr, flush=True)

    def waiting(self, why: str) -> None:
        """Still waiting: the latest reason, in the table only (stderr got the event)."""
        if self._live is not None:
            base = self.status.split(" [", 1)[0]
            self.status = f"{base} [{why}]"
            self._live.update(self._table(), refresh=True)

    def update(self, sample: dict) -> None:
        self._sample = sample
        self.samples += 1
        now = time.monotonic()
        if now - self._last < self.refresh_s:
            return
        self._last = now
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
        else:
            for line in self.lines():
                print(line, flush=True)

    def _rows(self) -> list[list[str]]:
        """A row per loop: name, setpoint, measurement, output, mode, alarms, faults,
        jitter p99."""
        s = self._sample
        stats = self.node.stats() or {}
        rows = []
        for name in self.node.loops:
            v = (s or {"loops": {}})["loops"].get(name)
            if v is None:
                rows.append([name] + ["-"] * 7)
                continue
            st = status_names(v["status"])
            u = self.units.get(name, {})
            jit = stats.get(name, {}).get("jitter_p99_us")
            rows.append([name, _with(v["setpoint"], u.get("measurement", "")),
                         _with(v["measurement"], u.get("measurement", "")),
                         _with(v["output"], u.get("output", "")),
                         st["mode"] + (" (tuning)" if st["tuning"] else ""),
                         ",".join(st["alarms"]) or "-", ",".join(st["faults"]) or "-",
                         "-" if jit is None else f"{jit} us"])
        return rows

    def _signal_rows(self) -> list[tuple[str, str]]:
        """A row per signal of the latest sample (a block's or device channel's value, in
        HELLO's order): name, value. Telemetry carries a signal's value only, no status."""
        return [(name, _with(value, ""))
                for name, value in (self._sample or {}).get("signals", {}).items()]

    def link_quality(self) -> str:
        ls = self.node.link_stats
        total = ls.frames + ls.lost
        loss = 100.0 * ls.lost / total if total else 0.0
        return (f"frames {ls.frames}, lost {ls.lost} ({loss:.1f} %), rejected "
                f"{ls.bad_tag + ls.replayed + ls.malformed}, retries {ls.retries}"
                + (f", session {self.sessions}" if self.sessions > 1 else ""))

    def _table(self) -> Table:
        title = (f"{self.node.name}: {self.status}" if self.status
                 else f"{self.node.name}: {self.link_quality()}")
        t = Table(title=title, title_justify="left")
        signals = [] if self.status else self._signal_rows()
        # a node with signals: their rows under the loops', the value in the measurement
        # column and "signal" as the mode (as monitor --csv writes them)
        for col in ("loop / signal" if signals else "loop", "setpoint", "measurement", "output",
                    "mode", "alarms", "faults", "jitter p99"):
            t.add_column(col, justify="right" if col in ("setpoint", "measurement", "output",
                                                          "jitter p99") else "left")
        if not self.status:
            for r in self._rows():
                t.add_row(*r)
            if signals:
                t.add_section()
            for name, value in signals:
                t.add_row(name, "-", value, "-", "signal", "-", "-", "-")
        return t

    def lines(self) -> list[str]:
        out = []
        for r in self._rows():
            out.append(f"{r[0]}: sp {r[1]} y {r[2]} u {r[3]} {r[4]} alarms {r[5]} faults {r[6]} "
                       f"jitter {r[7]}")
        out += [f"{name}: signal {value}" for name, value in self._signal_rows()]
        out.append("link: " + self.link_quality())
        return out
