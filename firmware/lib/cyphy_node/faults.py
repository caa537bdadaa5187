# Fault records: the tick stores codes in preallocated arrays (no allocation); flush(), called
# outside the tick, appends them to a bounded file on flash that survives reset.
#
# File format (text, one record per line, oldest first, at most KEEP lines):
#   <ticks_ms> <loop name or "-"> <kind> <value> <wall_ms or "-">
# wall_ms: Unix time in ms, when a host had told the node the time (TIME: clock_set()) before
# the record was flushed; "-" otherwise (older files have no fifth field).
from array import array
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

EXCEPTION = const(1)    # a tick raised (latched until node.clear())
SENSOR = const(2)       # sensor outside its valid range (value: the reading, milli-units)
COMMS = const(3)        # comms timeout (value: ms since the last touch())
INTERRUPT = const(4)    # Ctrl-C in run()/the background callback
KINDS = {EXCEPTION: "exception", SENSOR: "sensor", COMMS: "comms", INTERRUPT: "interrupt"}
KEEP = 32               # records kept on flash
_Q = const(16)          # records buffered between flushes (older ones are dropped, counted)


class FaultLog:
    def __init__(self, path="/faults.log", names=()):
        self.path = path
        self.names = tuple(names)          # loop index -> name
        self._t = array("i", [0] * _Q)
        self._loop = array("b", [0] * _Q)
        self._kind = array("b", [0] * _Q)
        self._val = array("i", [0] * _Q)
        self.n = 0                          # buffered, not yet flushed
        self.dropped = 0
        self.listener = None                # called by flush(): (t_ms, loop, kind, value, text)
        self._clock = None                  # (host Unix ms, ticks_ms) of the last TIME

    def clock_set(self, host_ms, ticks):
        """A host's time: host_ms (Unix ms) was the time at ticks_ms() == ticks."""
        self._clock = (host_ms, ticks)

    def _wall(self, t):
        # Unix ms of ticks t (exact while t is within ~6 days of the last TIME: ticks_diff's
        # range on every port), or "-"
        c = self._clock
        return "-" if c is None else "%d" % (c[0] + time.ticks_diff(t, c[1]))

    def record(self, loop, kind, value):
        # Allocation-free (ticks_ms returns a small int). loop: index, or -1 for the node.
        n = self.n
        if n >= _Q:
            self.dropped += 1
            return
        self._t[n] = time.ticks_ms()
        self._loop[n] = loop
        self._kind[n] = kind
        self._val[n] = value
        self.n = n + 1

    def flush(self):
        """Append the buffered records to the file, keeping the last KEEP (allocates)."""
        n = self.n
        if not n:
            return 0
        lines = self._read_lines()
        for i in range(n):
            li = self._loop[i]
            name = self.names[li] if 0 <= li < len(self.names) else "-"
            lines.append("%d %s %s %d %s" % (self._t[i], name, KINDS.get(self._kind[i], "?"),
                                             self._val[i], self._wall(self._t[i])))
        lines = lines[-KEEP:]
        from .store import write_atomic
        write_atomic(self.path, "\n".join(lines) + "\n")
        self.n = 0      # only once written: a failed flush keeps them for the next one
        if self.listener is not None:   # e.g. the protocol's fault events
            for i in range(n):
                li = self._loop[i]
                self.listener(self._t[i], li, self._kind[i], self._val[i],
                              KINDS.get(self._kind[i], "?"))
        return n

    def _read_lines(self):
        try:
            with open(self.path) as f:
                return [ln for ln in f.read().split("\n") if ln]
        except OSError:
            return []

    def records(self):
        """[(ticks_ms, loop, kind, value, wall_ms or None), ...] from flash, oldest first
        (allocates)."""
        out = []
        for ln in self._read_lines():
            p = ln.split()
            if len(p) in (4, 5):
                w = p[4] if len(p) == 5 else "-"
                out.append((int(p[0]), p[1], p[2], int(p[3]), None if w == "-" else int(w)))
        return out
