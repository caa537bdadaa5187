# Device channels (sensors on buses, time-proportioned outputs): built from the config,
# stepped in the node's service (bus transactions, between control passes) and in its
# control pass (outputs that switch on time). Loaded only for a config that has one.
import time

_OUTPUTS = ("tpo",)


class Devices:
    def __init__(self, board):
        self.board = board
        self.buses = {}             # (family, pin) -> bus
        self.steppers = []          # buses stepped by the service
        self.timed = []             # outputs updated every control pass
        self.channels = []
        self.errors = 0             # exceptions in bus steps (the loops run on)
        self.last_error = None

    @staticmethod
    def is_output(kind):
        return kind in _OUTPUTS

    def input(self, c):
        if c.kind == "ds18b20":
            from .ds18b20 import Sensor, Bus
            bus = self.buses.get(("1w", c.pin))
            if bus is None:
                bus = self.buses[("1w", c.pin)] = Bus(c.pin, self.board)
                self.steppers.append(bus)
            s = Sensor(c)
            bus.add(s)
        else:
            raise ValueError('channel "%s": no driver for kind %s' % (c.name, c.kind))
        self.channels.append(s)
        return s

    def output(self, c):
        from .tpo import TimeProportioned
        o = TimeProportioned(c, self.board)
        self.timed.append(o)
        self.channels.append(o)
        return o

    def prime(self):
        """The first reading of every bus sensor, at boot (devices.py's buses wait for
        their conversions here, once, so the loops start with measurements)."""
        for b in self.steppers:
            try:
                b.prime()
            except Exception as e:  # noqa: BLE001 - a sensor fault then, as at run time
                self.errors += 1
                self.last_error = e

    def pass_us(self):
        """The control pass's period these devices need (us): a bus is served after
        every pass (at least every 50 ms: a DS18B20's conversion is then read within
        50 ms of its end); a time-proportioned output switches on the pass, so its
        edges fall within 1 % of its period (at least 10 ms apart)."""
        p = 50000 if self.steppers else 1000000
        for o in self.timed:
            p = min(p, max(10000, o.period_ms * 10))
        return p

    def step(self):
        # the service context: one transaction per bus; a failure is counted, never raised
        now = time.ticks_ms()
        for b in self.steppers:
            try:
                b.step(now)
            except Exception as e:  # noqa: BLE001 - a bus error must not stop the node
                self.errors += 1
                self.last_error = e
                b.state = 0

    def state(self):
        return {c.name: c.state() for c in self.channels if hasattr(c, "state")}
