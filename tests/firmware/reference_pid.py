"""CPython-side references for the node's control blocks (firmware/lib/cyphy_node).

- RefPID: the PID of pid.py in plain floats and engineering units. The firmware PID must
  match it within the fixed-point tolerance derived in test_pid.py. It is written from the
  semantics in pid.py's header, not from its code: no Gain, no F bits, no ring buffer.
- ultimate_point(): analytic Ku, Pu of a first-order-plus-dead-time plant (autotune tests).
- Small and wrap(): an int that asserts ESP32's small-int range on every arithmetic result,
  so the firmware modules run on CPython can prove that no value or intermediate would
  become a heap-allocated big int on the chip.

Importing this module also puts firmware/lib on sys.path, so `import cyphy_node...` works.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from pathlib import Path

FIRMWARE_LIB = Path(__file__).resolve().parents[2] / "firmware" / "lib"
if str(FIRMWARE_LIB) not in sys.path:
    sys.path.insert(0, str(FIRMWARE_LIB))

SMALL_MIN = -(1 << 30)
SMALL_MAX = (1 << 30) - 1


class Small(int):
    """int whose every arithmetic result is checked against ESP32's small-int range.

    Results are Small again, so everything derived from a wrapped input or state is checked
    too. Python tries a subclass's reflected method first, so `3 * Small(x)` is checked as
    well. Comparisons create no values and need no check.
    """

    def __new__(cls, v):
        v = int(v)
        if not SMALL_MIN <= v <= SMALL_MAX:
            raise OverflowError(f"{v} ({v / 2**30:+.3f} * 2**30) leaves ESP32's small-int range")
        return int.__new__(cls, v)


def _checked(name):
    op = getattr(int, name)

    def method(self, *args):
        r = op(self, *args)
        if r is NotImplemented or type(r) is not int:
            return r
        return Small(r)

    method.__name__ = name
    return method


for _name in ("add radd sub rsub mul rmul floordiv rfloordiv mod rmod lshift rlshift rshift "
              "rrshift and rand or ror xor rxor neg pos abs invert").split():
    setattr(Small, f"__{_name}__", _checked(f"__{_name}__"))


def wrap(obj, _seen=None):
    """Turn every int attribute of a firmware object (and of the firmware objects it holds:
    Gain, Ramp, Acc...) into Small. Call it again after a configuration call."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    for k, v in vars(obj).items():
        if type(v) is int:
            setattr(obj, k, Small(v))
        elif type(type(v)).__name__ == "type" and type(v).__module__.startswith("cyphy_node"):
            wrap(v, seen)
    return obj


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


class RefPID:
    def __init__(self, kp, ki, kd, dt, out_min=0.0, out_max=100.0, setpoint=0.0,
                 reverse=False, p_on_m=False, d_on_error=False, d_filter=0.0, sp_rate=0.0,
                 i_min=None, i_max=None, conditional=True, deadband=None,
                 db_gains=(0.0, 0.0, 0.0), avg=1, avg_db=None, integral=0.0,
                 error_map=None, auto=True, sp_weight=None):
        self.kp, self.ki, self.kd = kp, ki, kd
        # Setpoint weight b: P = kp (b sp - y), written (as pid.py's header says) as
        # kp b e in P and -kp (1 - b) dy accumulated in I; p_on_m is b = 0.
        self.b = (0.0 if p_on_m else 1.0) if sp_weight is None else float(sp_weight)
        self.dt, self.tf = dt, d_filter
        self.out_min, self.out_max = out_min, out_max
        self.i_min = out_min if i_min is None else i_min
        self.i_max = out_max if i_max is None else i_max
        lim = max(abs(self.out_min), abs(self.out_max), abs(self.i_min), abs(self.i_max))
        self.T = max(4 * lim, 0.004)
        self.setpoint = setpoint
        self.sp = setpoint
        self.sp_rate = sp_rate
        self.reverse, self.p_on_m, self.d_on_error = reverse, p_on_m, d_on_error
        self.conditional = conditional
        if deadband is None:
            self.db = None
        elif isinstance(deadband, (int, float)):
            self.db = (-abs(deadband), abs(deadband))
        else:
            self.db = tuple(deadband)
        self.mp, self.mi, self.md = db_gains
        self.n1 = avg
        self.n2 = avg if avg_db is None else avg_db
        self.hist = deque(maxlen=max(self.n1, self.n2))
        self.error_map = error_map
        self.auto = auto
        self.I = _clamp(integral, self.i_min, self.i_max)
        self.D = 0.0
        self.fresh = True
        self.bump = False
        self.out = 0.0
        self.man = 0.0
        self.p = self.i = self.d = self.e = 0.0
        self.y_prev = self.e_prev = self.dm = 0.0
        self.bias = 0.0             # transfer bias (pid.py): what I's limits could not take

    def set_tunings(self, kp, ki, kd):
        old_p, old_d, old_kd = self.p, self.d, self.kd
        self.kp, self.ki, self.kd = kp, ki, kd
        if self.auto and not self.fresh:
            if old_kd > 0:
                self.D = _clamp(self.D * kd / old_kd, -self.T, self.T)
            elif not self.d_on_error:
                self.D = _clamp(kd / self.dt * self.dm, -self.T, self.T)
            else:
                self.D = 0.0
            self.d = self.D
            self.p = self._p_term(self.e, self._in_band(self.e))
            self._absorb(self.I + old_p - self.p + old_d - self.d)

    def _absorb(self, i):
        i = _clamp(i, -self.T, self.T)
        self.I = _clamp(i, self.i_min, self.i_max)
        self.bias = _clamp(self.bias + i - self.I, -self.T, self.T)

    def set_manual(self, out=None):
        self.auto = False
        if out is not None:
            self.out = out
        self.out = self.man = _clamp(self.out, self.out_min, self.out_max)

    def set_auto(self):
        if not self.auto:
            self.auto = True
            self.bump = True
            self.hist.clear()
            self.D = 0.0

    def _in_band(self, e):
        return self.db is not None and self.db[0] <= e <= self.db[1]

    def _p_term(self, e, inb):
        kp = self.kp * self.b
        if inb:
            p = kp * self.mp * e
        else:
            p = _clamp(kp * e, -self.T, self.T)
            if self.db is not None:
                edge = self.db[1] if e > self.db[1] else self.db[0]
                p -= kp * (1 - self.mp) * edge
        return _clamp(p, -self.T, self.T)

    def update(self, y):
        # Working setpoint: move toward the target by at most sp_rate * dt.
        if self.sp_rate > 0:
            step = self.sp_rate * self.dt
            self.sp = self.sp + _clamp(self.setpoint - self.sp, -step, step)
        else:
            self.sp = self.setpoint
        if self.fresh:
            self.y_prev = y
        e = (y - self.sp) if self.reverse else (self.sp - y)
        dm = (y - self.y_prev) if self.reverse else (self.y_prev - y)
        self.dm = dm
        self.y_prev = y
        if self.error_map is not None:
            e = self.error_map(e)
        self.e = e
        if self.fresh:
            self.fresh = False
            self.e_prev = e
        if not self.auto:
            self.e_prev = e
            return self.out
        inb = self._in_band(e)
        T = self.T
        self.p = self._p_term(e, inb)
        # Derivative: first-order filtered, on measurement (or error).
        dx = (e - self.e_prev) if self.d_on_error else dm
        self.e_prev = e
        kd = self.kd * (self.md if inb else 1.0)
        g = _clamp(kd / (self.tf + self.dt) * dx, -T, T)
        self.D = _clamp(self.tf / (self.tf + self.dt) * self.D + g, -T, T)
        self.d = self.D
        # Integral.
        if self.bump:
            self.bump = False
            self.bias = 0.0
            self._absorb(self.man - self.p - self.d)
        else:
            s = 0.0
            if self.b < 1.0:
                s = _clamp(self.kp * (1.0 - self.b) * (self.mp if inb else 1.0) * dm, -T, T)
            inc = _clamp(self.ki * (self.mi if inb else 1.0) * self.dt * e, -T, T)
            base = _clamp(self.I + s, self.i_min, self.i_max)
            new = _clamp(self.I + s + inc, self.i_min, self.i_max)
            if self.conditional:
                u = self.p + self.d + new + self.bias
                if (inc > 0 and u > self.out_max) or (inc < 0 and u < self.out_min):
                    new = base
            self.I = new
        self.i = self.I
        u = _clamp(self.p + self.i + self.d + self.bias, self.out_min, self.out_max)
        if self.bias:
            from cyphy_node.pid import TRANSFER_S
            tb = TRANSFER_S if self.ki <= 0 else (0.0 if self.kp <= 0 else min(self.kp / self.ki, TRANSFER_S))
            g = 1.0 if tb <= self.dt else self.dt / tb
            k = self.bias * g
            self.bias -= k
        self.u = u
        # Output averaging over the last n outputs (window filled with u on (re)start).
        if self.n1 > 1 or self.n2 > 1:
            if not self.hist:
                self.hist.extend([u] * self.hist.maxlen)
            self.hist.append(u)
            n = self.n2 if inb else self.n1
            u = sum(list(self.hist)[-n:]) / n
        self.out = self.man = u
        return u


def ultimate_point(K, tau, L):
    """Ultimate gain and period of K exp(-L s) / (tau s + 1): phase -180 deg at w_u."""
    lo, hi = 1e-12, math.pi / L
    for _ in range(200):
        w = (lo + hi) / 2
        if w * L + math.atan(w * tau) < math.pi:
            lo = w
        else:
            hi = w
    w = (lo + hi) / 2
    return math.sqrt(1 + (w * tau) ** 2) / K, 2 * math.pi / w
