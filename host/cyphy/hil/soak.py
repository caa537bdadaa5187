"""Protocol traffic for soak runs (tests/sim/test_soft_irq_soak.py, make bench's sim
section): one host session sets a loop parameter and reads it back as fast as the node
answers, with a statistics read now and then."""

from __future__ import annotations

import time
from typing import Any


def traffic(session: Any, loop: str, key: str, lo: float, seconds: float, out: dict) -> None:
    """Run for `seconds`; out gets commands (sent and acknowledged), wrong (values read back
    that were not the one just set: a command applied twice, late or half would show) and
    error (why it stopped early, if it did). Each host must use its own key."""
    n = wrong = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            v = lo + (n % 50) / 10
            session.set(loop, key, v)
            if abs(session.read(f"{loop}.{key}") - v) > 1e-3:
                wrong += 1
            if n % 10 == 0:
                session.read("stats")
            n += 1
    except Exception as e:  # noqa: BLE001 - the caller reports it
        out["error"] = f"{type(e).__name__}: {e}"
    out["commands"] = n
    out["wrong"] = wrong
