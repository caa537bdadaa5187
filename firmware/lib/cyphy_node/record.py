# Recording a run on the node itself: every loop's setpoint, measurement, output and status
# each period_ms, printed as it goes (one line per sample; nothing kept, so any length
# fits the heap). The host's HIL plugin uses it where the protocol's telemetry cannot keep
# pace: on virtual time the node runs many times faster than real time, and a recording
# made in the node's own time is exact and the same on every run. Values are milli-units,
# as in telemetry. Runs in the REPL, outside the ticks (printing allocates).
import time

from .proto import loop_status


def record(node, seconds, period_ms=1000):
    """Sample every loop each period_ms for `seconds` (the loops run meanwhile, on their
    timer), printing t_ms and, per loop, sp y u status."""
    n = int(seconds * 1000) // period_ms
    loops = node.loops
    t0 = time.ticks_ms()
    due = t0
    for _ in range(n):
        due = time.ticks_add(due, period_ms)
        w = time.ticks_diff(due, time.ticks_ms())
        if w > 0:
            time.sleep_ms(w)
        row = [time.ticks_diff(time.ticks_ms(), t0)]
        for lp in loops:
            row += [(lp.pid or lp.onoff).setpoint, lp.y, lp.u, loop_status(lp)]
        print(" ".join([str(v) for v in row]))
