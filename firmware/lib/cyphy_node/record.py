# Recording a run on the node itself: every loop's setpoint, measurement, output and status
# each period_ms, kept in preallocated arrays and printed afterwards. The host's HIL
# plugin uses it where the protocol's telemetry cannot keep pace: on virtual time the
# node runs many times faster than real time, and a recording made in the node's own time
# is exact and the same on every run. Values are milli-units, as in telemetry.
from array import array
import time

from .proto import loop_status


def record(node, seconds, period_ms=1000):
    """Sample every loop each period_ms for `seconds` (the loops run meanwhile, on their
    timer), then print one line per sample: t_ms and, per loop, sp y u status."""
    n = int(seconds * 1000) // period_ms
    loops = node.loops
    width = 1 + 4 * len(loops)
    buf = array("i", bytes(4 * n * width))      # allocated once, before the run
    t0 = time.ticks_ms()
    due = t0
    for k in range(n):
        due = time.ticks_add(due, period_ms)
        w = time.ticks_diff(due, time.ticks_ms())
        if w > 0:
            time.sleep_ms(w)
        o = k * width
        buf[o] = time.ticks_diff(time.ticks_ms(), t0)
        for i in range(len(loops)):
            lp = loops[i]
            j = o + 1 + 4 * i
            buf[j] = (lp.pid or lp.onoff).setpoint
            buf[j + 1] = lp.y
            buf[j + 2] = lp.u
            buf[j + 3] = loop_status(lp)
    for k in range(n):
        o = k * width
        print(" ".join([str(v) for v in buf[o:o + width]]))

