# Device channels (sensors on buses, timed outputs): built from the config, stepped in the
# node's service (bus transactions, between control passes) and in its control pass
# (outputs that switch on time). Loaded only for a config that has one; each kind's driver
# module only when the config uses that kind.
#
# A driver module has make(devices, ch) -> the channel object: an input has read(), ok(v),
# vmin, vmax, units, name, kind, value, state(); an output has write(u), safe(), lo, hi,
# failsafe, units, name, kind, value, state(). It registers with `devices` what must run:
# add_stepper(obj) (obj.step(now_ms) in the service: one bus transaction per call, never
# more than a few ms; obj.prime() at boot, optional) and add_timed(obj) (obj.update(now_ms)
# in every control pass: allocation-free), and asks for a pass period with want_pass_us.
import time

# A bus sensor's status (Reading.status; a driver may name more after these)
OK = 0
MISSING = 1
CRC = 2
STALE = 3
WAITING = 4


class Reading:
    """A bus sensor's latest good value and its age: the input a loop or block reads
    (read, ok: tick-safe, allocation-free), what the driver sets (_good, _fail: in the
    service) and what the tools show (state)."""

    STATUS = ("ok", "missing", "crc error", "stale", "waiting")

    def __init__(self, ch):
        from .fixed import to_fixed

        self.name = ch.name
        self.units = ch.units
        self.vmin = to_fixed(ch.valid[0])
        self.vmax = to_fixed(ch.valid[1])
        self.stale_ms = ch.stale_ms
        self.value = 0              # the latest good reading, milli-units
        self.raw = 0                # the driver's raw form of it
        self.t_ms = 0               # ticks_ms of it
        self.good = 0               # 1 while the latest attempt gave a good reading
        self.status = WAITING
        self.errors = 0             # attempts that failed

    def read(self):
        return self.value

    def ok(self, v):
        # a good, fresh reading within the valid range
        if not self.good or v < self.vmin or v > self.vmax:
            return False
        if time.ticks_diff(time.ticks_ms(), self.t_ms) > self.stale_ms:
            self.status = STALE
            return False
        return True

    def state(self):
        return {"value": self.value / 1000, "status": self.STATUS[self.status],
                "age_ms": time.ticks_diff(time.ticks_ms(), self.t_ms) if self.good else None,
                "errors": self.errors}

    def _good(self, value, raw, now):
        self.value = value
        self.raw = raw
        self.t_ms = now
        self.good = 1
        self.status = OK

    def _fail(self, why):
        self.good = 0
        self.status = why
        self.errors += 1


# kind -> driver module (cyphy_node.<module>)
DRIVERS = {"ds18b20": "ds18b20", "tpo": "tpo", "sht3x": "sht3x", "max31855": "max31855",
           "counter": "pulse", "encoder": "pulse", "modbus_in": "modbus", "modbus_out": "modbus"}
OUTPUTS = ("tpo", "modbus_out")


class Devices:
    def __init__(self, board):
        self.board = board
        self.buses = {}             # shared buses by key, e.g. ("1w", pin)
        self.steppers = []          # stepped by the service
        self.timed = []             # updated every control pass
        self.channels = []
        self.pass_us_max = 1000000  # the longest control-pass period the devices allow
        self.errors = 0             # exceptions in bus steps (the loops run on)
        self.last_error = None

    @staticmethod
    def is_output(kind):
        return kind in OUTPUTS

    def _make(self, c):
        name = DRIVERS.get(c.kind)
        if name is None:
            raise ValueError('channel "%s": no driver for kind %s' % (c.name, c.kind))
        mod = getattr(__import__("cyphy_node." + name), name)
        o = mod.make(self, c)
        self.channels.append(o)
        return o

    input = _make
    output = _make

    def add_stepper(self, s):
        self.steppers.append(s)
        self.want_pass_us(50000)    # served at least every 50 ms

    def add_timed(self, o):
        self.timed.append(o)

    def want_pass_us(self, us):
        self.pass_us_max = min(self.pass_us_max, us)

    def prime(self):
        """Each bus's first readings, at boot, before any loop ticks (drivers wait for
        their conversions here, once, so the loops start with measurements)."""
        for b in self.steppers:
            if hasattr(b, "prime"):
                try:
                    b.prime()
                except Exception as e:  # noqa: BLE001 - a sensor fault then, as at run time
                    self.errors += 1
                    self.last_error = e

    def pass_us(self):
        """The control pass's period these devices need (us)."""
        return self.pass_us_max

    def step(self):
        # the service context: one transaction per bus; a failure is counted, never raised
        now = time.ticks_ms()
        for b in self.steppers:
            try:
                b.step(now)
            except Exception as e:  # noqa: BLE001 - a bus error must not stop the node
                self.errors += 1
                self.last_error = e
                if hasattr(b, "recover"):
                    b.recover(now)

    def state(self):
        return {c.name: c.state() for c in self.channels}
