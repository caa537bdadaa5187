# Recording a run on the node itself: every loop's setpoint, measurement, output and status
# each period_ms, printed as it goes (one line per sample; nothing kept, so any length
# fits the heap). The host's HIL plugin uses it where the protocol's telemetry cannot keep
# pace: on virtual time the node runs many times faster than real time, and a recording
# made in the node's own time is exact and the same on every run. Values are milli-units,
# as in telemetry. Runs in the REPL, outside the ticks (printing allocates).
import time

from .proto import loop_status


def record(node, seconds, period_ms=1000):
    """Sample every loop at once (t_ms 0: the instant of a step made just before) and then
    each period_ms for `seconds` (the loops run meanwhile, on their timer), printing t_ms,
    per loop sp y u status, then each signal's value."""
    n = int(seconds * 1000) // period_ms
    t0 = time.ticks_ms()
    due = t0
    _row(node, 0)
    for _ in range(n):
        due = time.ticks_add(due, period_ms)
        w = time.ticks_diff(due, time.ticks_ms())
        if w > 0:
            time.sleep_ms(w)
        _row(node, time.ticks_diff(time.ticks_ms(), t0))


def ticked(node):
    """Return once every loop has ticked at least once (right after a boot on virtual time,
    none has: the clock moves only while the node sleeps), so that a step made next is a
    step of a running loop and a recording's first row holds real measurements."""
    for _ in range(5000):           # at most ~5 s: a loop with a latched fault never ticks
        if all(lp.ticks for lp in node.loops):
            return
        time.sleep_ms(1)


def _row(node, t_ms):
    # t_ms, sp y u status per loop, then each signal's value (node.signals(): blocks and
    # device channels, as telemetry carries them)
    row = [t_ms]
    for lp in node.loops:
        row += [(lp.pid or lp.onoff).setpoint, lp.y, lp.u, loop_status(lp)]
    row += [o.value for _, o in node.signals()]
    print(" ".join([str(v) for v in row]))
