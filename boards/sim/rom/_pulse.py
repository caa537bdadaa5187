# The sim's machine.Counter and machine.Encoder (ESP32's PCNT) and the pulse sources of
# the bench that drive them.
#
# MicroPython on ESP32 ([MP-PCNT] in boards/esp32/pins.py): Counter(id, src, *, edge=
# Counter.RISING|FALLING, direction=Counter.UP|DOWN, filter_ns=0) and Encoder(id, phase_a,
# phase_b, *, phases=1|2|4, filter_ns=0), id a PCNT unit (ESP32 8, S3 4; the C3 has no
# PCNT: its machine module has neither class), value([v]) gets and optionally sets. The
# hardware counts every edge however fast (up to the filter); so does the model, from a
# plant signal integrated over the plant's own steps: pulses = integral of |signal| x
# per_unit dt (a counter), quadrature cycles = integral of signal x per_unit dt (an encoder,
# signed; x phases counts per cycle). The count is whole edges: the fraction waits.
#
# Bench wiring: {"kind": "pulses", "pin": 14, "signal": "speed", "per_unit": 100.0} and
# {"kind": "quadrature", "pin_a": 14, "pin_b": 15, "signal": "speed", "per_unit": 159.15}
# (per_unit: pulses or cycles per second per unit of the signal), "faults": [{"at_s": ...,
# "fault": "stopped"|"none"}] (a broken wire: no edges).


class Source:
    def __init__(self, w, where):
        self.signed = w["kind"] == "quadrature"
        self.pins = (w["pin_a"], w["pin_b"]) if self.signed else (w["pin"],)
        self.signal = w["signal"]
        self.k = float(w["per_unit"])
        self.faults = sorted([(float(f["at_s"]), f["fault"]) for f in w.get("faults", [])])
        for _, f in self.faults:
            if f not in ("stopped", "none"):
                raise ValueError("bench wiring: %s: fault %r (stopped, none)" % (where, f))
        self.acc = 0.0              # edges (cycles) so far, with the fraction
        self.seen = 0               # edges handed to Pin.irq handlers so far
        self.lost = 0               # edges the soft-IRQ queue dropped

    def step(self, plant, dt, now_us):
        f = "none"
        for at, what in self.faults:
            if now_us >= at * 1000000:
                f = what
        if f == "stopped":
            return
        v = plant.true(self.signal) * self.k * dt
        self.acc += v if self.signed else abs(v)

    def edges(self):
        return int(self.acc) if self.acc >= 0 else -int(-self.acc)


def make_classes(bench, chip):
    """(Counter, Encoder) of this chip's machine module, or None on a chip without PCNT."""
    units = chip.get("pcnt_units", 0)
    if not units:
        return None
    used = {}

    def source(pin):
        for s in bench.pulses:
            if pin in s.pins:
                return s
        return None

    class _Unit:
        RISING = 1
        FALLING = 2
        UP = 1
        DOWN = -1

        def __init__(self, id, *pins, **kw):
            if not isinstance(id, int) or not 0 <= id < units:
                raise ValueError("invalid id")
            self.id = id
            used[id] = self
            self.init(*pins, **kw)

        def _setup(self, pin, mult, sign):
            self.src = source(pin.id if hasattr(pin, "id") else pin)
            self.mult = mult
            self.sign = sign
            self.base = self.src.edges() if self.src is not None else 0
            self.offset = 0

        def value(self, v=None):
            e = self.src.edges() if self.src is not None else 0
            n = self.offset + (e - self.base) * self.mult * self.sign
            if v is not None:
                self.base = e
                self.offset = v
            return n

    class Counter(_Unit):
        def init(self, src, *, edge=1, direction=1, filter_ns=0):
            self._setup(src, 1, -1 if direction == -1 else 1)

    class Encoder(_Unit):
        def init(self, phase_a, phase_b, *, phases=1, filter_ns=0):
            if phases not in (1, 2, 4):
                raise ValueError("phases must be 1, 2 or 4")
            self._setup(phase_a, phases, 1)

    return Counter, Encoder


def wire(w, where):
    return Source(w, where)
