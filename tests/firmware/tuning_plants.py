"""The relay autotune judged as a user would: a family of plants, the closed loop the node
runs after a tune, and the reference it is compared with (tests and `make bench`).

- family(seed, n): plants drawn from parameter ranges and a seed (FOPDT with dead time /
  time constant 0.02..2, DC motors, two-tank levels at several operating points,
  underdamped second-order plants with some dead time), built with _plant.make() (the sim
  board's models), each with its loop rate, actuator range, operating point, noise and a
  relay an operator would choose.
- autotune(case, seed): the firmware's RelayTune on the noisy plant, from rest at the
  operating point; result() as the node gets it.
- evaluate(case, gains): setpoint step and load step (a step on the plant input, as in
  SIMC and AMIGO) with the firmware's PID, without noise: IAE, overshoot, settling time.
- optimum(case, task): the reference. The PID of the same structure (P on error or on
  measurement, D on measurement with filter Td / 10, same sample time and output limits,
  conditional anti-windup) minimising the task's IAE subject to: the setpoint step
  overshoots at most 10 % and settles within 2 %, the load step settles within 2 %, and
  the maximum sensitivity Ms <= 2 (the usual upper bound of acceptable robustness,
  Astrom & Hagglund 2006, ch. 4; without a robustness bound the IAE optimum of a plant
  without dead time is an infinitely fast, useless loop). Nelder-Mead from several starts.

Floats and plain Python; the optimiser runs the float reference PID (reference_pid.RefPID,
the same controller as pid.py within fixed-point rounding) for speed.
"""

from __future__ import annotations

import cmath
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from reference_pid import RefPID  # also puts firmware/lib on sys.path

REPO = Path(__file__).resolve().parents[2]
ROM = REPO / "boards" / "sim" / "rom"
if str(ROM) not in sys.path:
    sys.path.insert(0, str(ROM))

import _plant  # noqa: E402

from cyphy_node.autotune import RUNNING, RelayTune  # noqa: E402
from cyphy_node.pid import PID  # noqa: E402

OS_MAX = 0.10          # setpoint overshoot, fraction of the step
BAND = 0.02            # settling band, fraction of the step (load: of its open-loop effect)
MS_MAX = 2.0           # robustness bound of the reference optimum
KINDS = ("fotd", "dcmotor", "twotank", "second_order")


@dataclass
class Case:
    name: str
    kind: str
    spec: dict                 # for _plant.make (no noise, no initial)
    inp: str
    out: str
    initial: dict              # equilibrium at the operating point
    u0: float                  # operating input
    umin: float
    umax: float
    du: float                  # input step whose static effect is the setpoint step
    scale: float               # measurement units per plant unit (a user's choice of unit)
    kstat: float               # static gain, measurement units per input unit
    y0: float                  # operating measurement, units
    dt: float
    n: int                     # ticks per step experiment
    gfun: object = field(repr=False, default=None)  # s -> plant G(s), units per input unit
    noise: float = 0.0         # measurement noise std, plant units
    params: dict = field(default_factory=dict)

    @property
    def step(self):
        return self.kstat * self.du

    def plant(self, seed=1, noise=False):
        spec = dict(self.spec, initial=dict(self.initial))
        if noise and self.noise:
            spec["noise"] = {"std": {self.out: self.noise}}
        return _plant.make(spec, seed=seed)

    def relay(self):
        """What an operator would set: an asymmetric relay around the operating input,
        hysteresis three noise standard deviations (above the noise band)."""
        return dict(high=min(self.umax, self.u0 + 2.5 * self.du),
                    low=max(self.umin, self.u0 - 2.0 * self.du),
                    hyst=max(3.0 * self.noise * self.scale, 0.002))


def _lu(rnd, lo, hi):
    return math.exp(rnd.uniform(math.log(lo), math.log(hi)))


def _fotd(rnd, i):
    K = rnd.uniform(0.5, 2.0)
    r = _lu(rnd, 0.02, 2.0)                   # dead time / time constant
    j = rnd.randint(1, 10)
    L, dt = 0.8 * j, 0.1 * j                  # 8 samples per dead time, on the 0.1 s grid
    T = L / r
    n = int((40 * L + 4 * min(T, 10 * L)) / dt)
    return Case(f"fotd{i} L/T={r:.2f}", "fotd",
                {"type": "fotd", "gain": K, "tau_s": T, "dead_time_s": L, "ambient": 20.0},
                "heater", "temperature", {"heater": 50.0, "temperature": 20 + 50 * K},
                50.0, 0.0, 100.0, 10.0, 1.0, K, 20 + 50 * K, dt, n,
                lambda s: K * cmath.exp(-L * s) / (T * s + 1), 0.01 * K * 10.0,
                {"K": K, "T": T, "L": L})


def _dcmotor(rnd, i):
    J, b = _lu(rnd, 0.005, 0.02), _lu(rnd, 0.05, 0.2)
    K, R, Lm = _lu(rnd, 0.01, 0.05), _lu(rnd, 0.5, 2.0), _lu(rnd, 0.1, 1.0)
    den0 = R * b + K * K
    kw = K / den0                              # rad/s per V
    u0 = 6.0
    w0 = kw * u0
    i0 = b * w0 / K
    # poles of (Lm s + R)(J s + b) + K^2
    a, bb, c = Lm * J, Lm * b + R * J, den0
    disc = math.sqrt(max(bb * bb - 4 * a * c, 0.0))
    slow = (bb - disc) / (2 * a) if disc else bb / (2 * a)
    fast = (bb + disc) / (2 * a)
    dt = round(max(0.002, 1.0 / (20 * fast)), 3)
    n = max(300, int(8.0 / slow / dt))
    scale = 10.0 / (kw * 1.2)                  # the 1.2 V step is 10 units
    return Case(f"dcmotor{i}", "dcmotor",
                {"type": "dcmotor", "J": J, "b": b, "K": K, "R": R, "L": Lm,
                 "vmin": 0.0, "vmax": 12.0},
                "voltage", "speed", {"voltage": u0, "speed": w0, "current": i0},
                u0, 0.0, 12.0, 1.2, scale, kw * scale, w0 * scale, dt, n,
                lambda s: scale * K / ((Lm * s + R) * (J * s + b) + K * K), 0.01 * kw * 1.2,
                {"poles": (-slow, -fast)})


def _twotank(rnd, i):
    A1, A2 = 28e-4 * rnd.uniform(0.8, 1.25), 32e-4 * rnd.uniform(0.8, 1.25)
    a1, a2 = 7.1e-6 * rnd.uniform(0.8, 1.25), 5.7e-6 * rnd.uniform(0.8, 1.25)
    k, g = 3.33e-6, 9.81
    c1, c2 = a1 * math.sqrt(2 * g), a2 * math.sqrt(2 * g)
    u0 = rnd.uniform(1.0, 2.6)                 # operating point: tank 2 from ~1/10 to ~3/5 full
    q = k * u0
    h1, h2 = (q / c1) ** 2, (q / c2) ** 2
    if h2 > 0.15:                              # keep clear of the 0.2 m rim
        u0 *= math.sqrt(0.15 / h2)
        q = k * u0
        h1, h2 = (q / c1) ** 2, (q / c2) ** 2
    g1 = c1 / (2 * math.sqrt(h1))              # linearised outflow conductances
    g2 = c2 / (2 * math.sqrt(h2))
    kh = k / g2                                # m per V
    scale = 1000.0                             # mm
    t1, t2 = A1 / g1, A2 / g2
    dt = round(min(t1, t2) / 20, 1)
    n = int(6 * (t1 + t2) / dt)
    du = 0.1 * u0
    return Case(f"twotank{i} h2={h2 * 100:.1f}cm", "twotank",
                {"type": "twotank", "A1": A1, "A2": A2, "a1": a1, "a2": a2, "k": k},
                "pump", "h2", {"pump": u0, "h1": h1, "h2": h2}, u0, 0.0, 10.0, du,
                scale, kh * scale, h2 * scale, dt, n,
                lambda s: scale * k / (A1 * s + g1) * g1 / (A2 * s + g2), 0.01 * du * kh,
                {"tau1": t1, "tau2": t2, "h2": h2})


def _second_order(rnd, i):
    K = rnd.uniform(0.5, 2.0)
    wn = _lu(rnd, 0.5, 5.0)
    z = rnd.uniform(0.15, 0.6)
    L = round(_lu(rnd, 0.1, 1.0) / wn, 2)
    dt = max(0.005, round(min(L, 0.5 / wn) / 8, 3))
    n = int(max(40 * L, 30 / wn, 12 / (z * wn)) / dt)   # time for the resonance to die out
    h = _buffer_step(L)
    return Case(f"second_order{i} zeta={z:.2f}", "second_order",
                {"type": "second_order", "gain": K, "wn_rad_s": wn, "zeta": z,
                 "dead_time_s": L},
                "drive", "y", {"drive": 50.0, "y": 50.0 * K}, 50.0, 0.0, 100.0, 10.0, 1.0,
                K, 50.0 * K, dt, n,
                lambda s: K * wn * wn * cmath.exp(-L * s) * _hold(s, h) /
                (s * s + 2 * z * wn * s + wn * wn),
                0.01 * K * 10.0, {"wn": wn, "zeta": z, "L": L, "h": h})


def _buffer_step(L):
    """The sampling step of _plant's dead-time buffer (L / ceil(L / 0.1)): an input
    change between its grid points waits for the next one, so a dead time that is not a
    multiple of the loop's sample time also samples and holds the input at this step."""
    n = math.ceil(L / 0.1 - 1e-6) if L > 0 else 0
    return L / n if n else 0.0


def _hold(s, h):
    """The zero-order hold of step h (the dead-time buffer's, see _buffer_step) in G(s):
    about a further h / 2 of delay; 1 when the buffer's grid is the loop's own."""
    return (1 - cmath.exp(-s * h)) / (s * h) if h and s != 0 else 1.0


_MAKERS = {"fotd": _fotd, "dcmotor": _dcmotor, "twotank": _twotank,
           "second_order": _second_order}


def family(seed, per_kind=2, kinds=KINDS):
    """per_kind plants of each kind, drawn from the ranges above with this seed."""
    rnd = random.Random(seed)
    out = []
    for kind in kinds:
        for j in range(per_kind):
            c = _MAKERS[kind](rnd, j)
            c.name = f"{c.name} s{seed}"
            out.append(c)
    return out


# ---- the relay run and the loop it leaves behind ----

def autotune(case, seed=1, cycles=4, settle=2):
    """Run the firmware's RelayTune on the noisy plant from rest at its operating point."""
    p = case.plant(seed=seed, noise=True)
    at = RelayTune(case.y0, case.dt, cycles=cycles, settle=settle, **case.relay())
    ticks = 0
    while at is not None:                  # the first run, and a second if it asks for one
        while at.status == RUNNING:
            u = at.update(round(case.scale * p.measure(case.out) * 1000)) / 1000.0
            p.set_input(case.inp, u)
            p.step(case.dt)
            ticks += 1
        last, at = at, at.follow_up()
    r = last.result()
    r["ticks"] = ticks
    return r


def gains(r):
    g = {k: r[k] for k in ("kp", "ki", "kd", "d_filter", "p_on_m")}
    g["sp_weight"] = weight(r)
    return g


def weight(g):
    """The setpoint weight b of gains g (sp_weight; without one, p_on_m: 0, else 1)."""
    b = g.get("sp_weight")
    return (0.0 if g["p_on_m"] else 1.0) if b is None else b


def _pid(case, g, fw, sp):
    kw = dict(out_min=case.umin, out_max=case.umax, setpoint=sp, sp_weight=weight(g),
              d_filter=g["d_filter"], integral=case.u0, sp_rate=g.get("sp_rate", 0.0))
    if fw:
        return PID(g["kp"], g["ki"], g["kd"], case.dt, **kw)
    return RefPID(g["kp"], g["ki"], g["kd"], case.dt, **kw)


def simulate(case, g, task, fw=True, trace=False, limit=math.inf):
    """One step experiment from equilibrium: task "setpoint" (step of the setpoint by
    case.step) or "load" (the plant input gets -case.du on top of the controller's
    output). Returns {"iae" (units s), "overshoot" (fraction), "settle_s", "settled"}."""
    step = case.step
    pid = _pid(case, g, fw, case.y0)
    sp = case.y0 + step if task == "setpoint" else case.y0
    if fw:
        pid.set_setpoint(round(sp * 1000))
    else:
        pid.setpoint = sp
    d = -case.du if task == "load" else 0.0
    p = case.plant()
    dt, scale, inp, out = case.dt, case.scale, case.inp, case.out
    iae, peak, last_out, k = 0.0, 0.0, -1, 0
    band = BAND * step
    ys = []
    for k in range(case.n):
        y = scale * p.true(out)
        e = sp - y
        if trace:
            ys.append(y)
        iae += abs(e) * dt
        if iae > limit:                    # already worse than what the caller has
            return {"iae": iae, "overshoot": math.inf, "settle_s": math.inf,
                    "settled": False}
        if abs(e) > band:
            last_out = k
            if abs(e) > 20 * step:
                return {"iae": math.inf, "overshoot": math.inf, "settle_s": math.inf,
                        "settled": False}
        if task == "setpoint":
            peak = max(peak, -e)
        else:
            peak = max(peak, abs(e))
        if fw:
            u = pid.update(round(y * 1000)) / 1000.0
        else:
            u = pid.update(y)
        p.set_input(inp, u + d)
        p.step(dt)
    settle = (last_out + 1) * dt
    r = {"iae": iae, "overshoot": peak / step if task == "setpoint" else peak / step,
         "settle_s": settle, "settled": last_out < 0.75 * case.n}
    if trace:
        r["y"] = ys
    return r


def evaluate(case, g, fw=True):
    return {"setpoint": simulate(case, g, "setpoint", fw), "load": simulate(case, g, "load", fw)}


# ---- robustness: the maximum sensitivity of the sampled loop ----

def ms(case, g):
    """max |1 / (1 + C G)| over frequency: the PID exactly as pid.py discretises it (I
    forward sum, filtered D on measurement; P on measurement does not change the loop),
    the plant G(jw) with the zero-order hold, up to the Nyquist frequency."""
    dt = case.dt
    kp, ki, kd, tf = g["kp"], g["ki"], g["kd"], g["d_filter"]
    b = tf / (tf + dt)
    best = 1.0
    wmax = math.pi / dt
    w = wmax * 1e-5
    while w <= wmax:
        z1 = cmath.exp(-1j * w * dt)               # z^-1
        c = kp + ki * dt / (1 - z1) + kd / (tf + dt) * (1 - z1) / (1 - b * z1)
        s = 1j * w
        zoh = (1 - cmath.exp(-s * dt)) / (s * dt)
        lw = c * case.gfun(s) * zoh
        m = 1.0 / abs(1 + lw)
        if m > best:
            best = m
        w *= 1.05
    return best


# ---- the reference optimum ----

def nelder_mead(f, x0, steps, iters=120, tol=1e-3):
    """Minimise f from x0 (a small Nelder-Mead: reflection, expansion, contraction,
    shrink). Returns (x, f(x))."""
    n = len(x0)
    pts = [list(x0)]
    for i in range(n):
        x = list(x0)
        x[i] += steps[i]
        pts.append(x)
    vals = [f(x) for x in pts]
    for _ in range(iters):
        order = sorted(range(n + 1), key=lambda i: vals[i])
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) <= tol * abs(vals[0]) and vals[0] < math.inf:
            break
        c = [sum(p[i] for p in pts[:-1]) / n for i in range(n)]
        xr = [c[i] + (c[i] - pts[-1][i]) for i in range(n)]
        fr = f(xr)
        if fr < vals[0]:
            xe = [c[i] + 2 * (c[i] - pts[-1][i]) for i in range(n)]
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = [c[i] + 0.5 * (pts[-1][i] - c[i]) for i in range(n)]
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                for j in range(1, n + 1):
                    pts[j] = [pts[0][i] + 0.5 * (pts[j][i] - pts[0][i]) for i in range(n)]
                    vals[j] = f(pts[j])
    i = min(range(n + 1), key=lambda i: vals[i])
    return pts[i], vals[i]


def _g(x, b):
    """Gains from x = (log kp, log ki, log kd[, b]): b the setpoint weight, x[3] (clamped
    to 0..1) if given."""
    kp, ki, kd = math.exp(x[0]), math.exp(x[1]), math.exp(x[2])
    if len(x) > 3:
        b = min(1.0, max(0.0, x[3]))
    b = float(b)
    return {"kp": kp, "ki": ki, "kd": kd, "d_filter": kd / kp / 10.0, "p_on_m": b == 0.0,
            "sp_weight": b}


def _x(g, dt):
    return [math.log(g["kp"]), math.log(max(g["ki"], 1e-9)),
            math.log(max(g["kd"], g["kp"] * dt * 0.1))]


def ultimate(case):
    """Ultimate gain and period of the sampled loop (plant with the hold), from G(jw)."""
    # unwrap along a log grid up to Nyquist and find where the lag reaches 180 degrees
    w, prev, lag = math.pi / case.dt * 1e-6, None, 0.0
    while w < math.pi / case.dt:
        s = 1j * w
        g = case.gfun(s) * (1 - cmath.exp(-s * case.dt)) / (s * case.dt)
        p = -cmath.phase(g)
        if prev is not None:
            d = p - prev
            while d < -math.pi:
                d += 2 * math.pi
            while d > math.pi:
                d -= 2 * math.pi
            lag += d
            if lag >= math.pi:
                return 1.0 / abs(g), 2 * math.pi / w
        else:
            lag = p
        prev = p
        w *= 1.01
    return 1.0 / abs(g), 2 * math.pi / w


def feasible(case, g, fw=False, limit=math.inf, task="setpoint"):
    """The spec every loop must meet, and the figures: (ok, {task: sim}, Ms)."""
    m = ms(case, g)
    if m > MS_MAX:
        return False, None, m
    sp = simulate(case, g, "setpoint", fw, limit=limit if task == "setpoint" else math.inf)
    if not (sp["settled"] and sp["overshoot"] <= OS_MAX):
        return False, {"setpoint": sp}, m
    ld = simulate(case, g, "load", fw, limit=limit if task == "load" else math.inf)
    return ld["settled"], {"setpoint": sp, "load": ld}, m


def optimum(case, task, starts=(), samples=150, seed=0):
    """The reference PID for task ("setpoint" or "load"): a seeded random sample of gains
    around the loop's ultimate point (kp 0.03..3 Ku, Ti 0.1..10 Pu, Td 0..0.6 Pu, P on
    error or measurement) plus `starts`, then Nelder-Mead from the three best feasible
    ones and once more from the best. The setpoint weight b is searched too (0..1, the
    structure of pid.py) for the setpoint task; for the load task it only decides whether
    the setpoint step meets the spec, and it is kept from the start. Returns (gains, sims, Ms), or (None, None, None) if nothing feasible was found."""
    ku, pu = ultimate(case)
    rnd = random.Random(seed)
    cands = [dict(g) for g in starts]
    for a, b, c in ((0.3, 0.8, 0.1), (0.15, 1.0, 0.15), (0.2, 2.0, 0.2), (0.5, 1.5, 0.3)):
        cands.append({"kp": a * ku, "ki": a * ku / (b * pu), "kd": a * ku * c * pu,
                      "d_filter": c * pu / 10, "p_on_m": False, "sp_weight": 1.0})
    for _ in range(samples):
        kp = ku * _lu(rnd, 0.03, 3.0)
        ti, td = pu * _lu(rnd, 0.1, 10.0), pu * _lu(rnd, 0.003, 0.6)
        b = rnd.choice((0.0, 1.0, rnd.random()))
        cands.append({"kp": kp, "ki": kp / ti, "kd": kp * td, "d_filter": td / 10,
                      "p_on_m": b == 0.0, "sp_weight": b})
    best = [math.inf]

    def cost(g):
        ok, sims, m = feasible(case, g, limit=3 * best[0], task=task)
        if not ok:
            return 1e9 * (1 + max(m - MS_MAX, 0)) + (sims["setpoint"]["overshoot"]
                                                      if sims else 0)
        v = sims[task]["iae"]
        if v < best[0]:
            best[0] = v
        return v

    scored = sorted(((cost(g), i, g) for i, g in enumerate(cands)), key=lambda t: t[:2])
    res = (math.inf, None)
    sw = task == "setpoint"

    def search(g0, steps):
        b = weight(g0)
        x0 = _x(g0, case.dt) + ([b] if sw else [])
        x, v = nelder_mead(lambda x, b=b: cost(_g(x, b)), x0,
                           steps + ([-0.3 if b > 0.5 else 0.3] if sw else []), iters=100)
        return v, _g(x, b)

    for v0, _, g0 in scored[:3]:
        if v0 >= 1e9:
            break
        v, g = search(g0, [0.3, 0.3, 0.6])
        if v < res[0]:
            res = (v, g)
    if res[1] is not None:                 # one restart from the best: Nelder-Mead stalls
        v, g = search(res[1], [0.2, 0.2, 0.4])
        if v < res[0]:
            res = (v, g)
    g = res[1]
    if g is None:
        return None, None, None
    ok, sims, m = feasible(case, g)
    if not ok:
        return None, None, None
    return g, sims, m


# ---- the rule's table (autotune._TABLE), derived like AMIGO ----

def simc(K, T, L):
    """SIMC PI (Skogestad 2003, tau_c = L) with a little derivative: a feasible start."""
    kp = T / (K * 2 * L) if T > 0 else 0.2 / K
    kp = max(kp, 0.2 / K)
    ti = max(min(T, 8 * L), L / 3)
    return {"kp": kp, "ki": kp / ti, "kd": kp * 0.1 * L, "d_filter": 0.01 * L,
            "p_on_m": False}


def fotd_case(tau, dt_per_L=16, K=1.0):
    """Normalised FOPDT: K = 1 (unless given), L = 1.6 s, T = L (1 - tau) / tau."""
    L = 1.6
    T = L * (1 - tau) / tau
    dt = L / dt_per_L
    return Case(f"fotd tau={tau:.2f}", "fotd",
                {"type": "fotd", "gain": K, "tau_s": T, "dead_time_s": L, "ambient": 0.0},
                "heater", "temperature", {"heater": 50.0, "temperature": 50.0 * K},
                50.0, 0.0, 100.0, 10.0, 1.0, K, 50.0 * K, dt,
                int((40 * L + 4 * min(T, 10 * L)) / dt),
                lambda s: K * cmath.exp(-L * s) / (T * s + 1), 0.0, {"K": K, "T": T, "L": L})


def _rule_gains(P, dt):
    """The gains (and b) autotune.tune gives the exact FOPDT model P."""
    import cyphy_node.autotune as AT

    g = AT.tune({"class": "fopdt", "K": P["K"], "T": P["T"], "L": P["L"]}, dt)
    return {k: g[k] for k in ("kp", "ki", "kd", "d_filter", "p_on_m", "sp_weight")}


def minimax(case, ref_sp, ref_ld, starts, os_max=0.06, ms_max=1.8, weights=(0.3, 0.9),
            alts=(), os_alt=0.09, ms_alt=1.95):
    """The gains and setpoint weight b minimising max(IAE_sp / ref_sp, IAE_ld / ref_ld)
    with margins on the spec (os_max, ms_max) for the identification's errors; a
    Nelder-Mead search of (log kp, log ki, log kd, b) from each start and each b of
    `weights`. alts: plants the identification may have taken for this one; the same
    gains must meet the spec on them within (os_alt, ms_alt) too."""
    best = (math.inf, None)
    for g0 in starts:
        for b0 in weights:
            def cost(x):
                g = _g(x, 1.0)
                m = ms(case, g)
                if m > ms_max:
                    return 1e9 * (1 + m)
                for a in alts:
                    m = ms(a, g)
                    if m > ms_alt:
                        return 1e8 * (1 + m)
                    sp = simulate(a, g, "setpoint", False)
                    if not sp["settled"] or sp["overshoot"] > os_alt:
                        return 1e6 * (1 + sp["overshoot"])
                    if not simulate(a, g, "load", False)["settled"]:
                        return 1e6
                sp = simulate(case, g, "setpoint", False)
                if not sp["settled"] or sp["overshoot"] > os_max:
                    return 1e6 * (1 + sp["overshoot"])
                ld = simulate(case, g, "load", False)
                if not ld["settled"]:
                    return 1e6
                return max(sp["iae"] / ref_sp, ld["iae"] / ref_ld)

            x0 = [math.log(g0["kp"]), math.log(max(g0["ki"], 1e-9)),
                  math.log(max(g0["kd"], g0["kp"] * case.dt * 0.1)), b0]
            x, v = nelder_mead(cost, x0, [0.3, 0.3, 0.6, 0.25])
            if v < best[0]:
                best = (v, _g(x, 1.0))
    return best


def single_pid_bound(case, j, ms_max, os_max=OS_MAX):
    """What any tuning rule of this PID structure could reach on `case` at best, knowing
    the plant exactly: the smallest larger-of-the-two IAE ratio (to the reference optima
    judge() found, j its result) of one PID and setpoint weight b with Ms <= ms_max and
    overshoot <= os_max (minimax from the autotuned and both optimal gains). None if
    judge() found no reference. A rule built on an identified model needs some margin
    below the reference's own Ms 2: this shows what that margin alone costs
    (docs/control.md, "Why the 1.2x goal is out of reach")."""
    if j.get("ref_iae_setpoint") is None or j.get("ref_iae_load") is None:
        return None
    S, L = j["ref_iae_setpoint"], j["ref_iae_load"]
    starts = [g for g in (j["auto"], j["opt_setpoint"], j["opt_load"]) if g]
    v, g = minimax(case, S, L, starts, os_max, ms_max, weights=(0.2, 0.5, 0.9))
    if g is not None:                      # once more from the best, with its own b
        v2, _ = minimax(case, S, L, [g], os_max, ms_max, weights=(weight(g),))
        v = min(v, v2)
    return v if v < 1e5 else None


def derive_table(taus=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), log=print,
                 os_max=0.06, ms_max=1.8, alt_tau=None, alt_below=0.25, os_alt=0.09,
                 ms_alt=1.95, dt_per_L=16, rule_starts=True):
    """Rows (tau, A, B, C, b) of autotune._TABLE: kp = A / (K tau), Ti = B L, Td = C L
    with L the dead time plus half a sample (what the node's rule uses), setpoint weight
    b; within margins os_max, ms_max. alt_tau: for rows below alt_below, the gains must
    also meet the spec within (os_alt, ms_alt) on the plant of L / (L + T) alt_tau with
    the same K / T and L (what a noisy relay run of a lag-dominant plant can look like:
    K / T and L are identified right, T alone can come out several times too short).
    rule_starts: the reference optima and the minimax search also start from the rule in
    force (autotune.tune on the exact model): from SIMC alone the searches stopped at
    local optima up to 20 % worse (at L / (L + T) 0.3 the load optimum found from the
    table's gains is 1.29x better than the row's own, against 1.06 from SIMC), and the
    rows were balanced against those."""
    rows = []
    for tau in taus:
        c = fotd_case(tau, dt_per_L)
        P = c.params
        alts = []
        if alt_tau is not None and alt_tau < tau < alt_below:
            a = fotd_case(alt_tau, dt_per_L)
            alts = [fotd_case(alt_tau, dt_per_L, K=a.params["T"] / P["T"])]
        s0 = simc(P["K"], P["T"], P["L"])
        starts = [s0, dict(s0, kp=s0["kp"] * 0.6, ki=s0["ki"] * 0.4)]
        if rule_starts:                # the rule in force: the searches start there too
            starts.append(_rule_gains(P, c.dt))
        gs, ss, _ = optimum(c, "setpoint", starts)
        gl, sl, _ = optimum(c, "load", starts + [gs])
        r, g = minimax(c, ss["setpoint"]["iae"], sl["load"]["iae"], [gs, gl] + starts[::2],
                       os_max=os_max, ms_max=ms_max, alts=alts, os_alt=os_alt,
                       ms_alt=ms_alt)
        L = P["L"] + c.dt / 2
        te = L / (L + P["T"])
        row = (tau, round(g["kp"] * P["K"] * te, 4), round(g["kp"] / g["ki"] / L, 4),
               round(g["kd"] / g["kp"] / L, 4), round(g["sp_weight"], 3))
        log(f"tau {tau}: ratio {r:.3f} row {row}  sp* {gs}  ld* {gl}")
        rows.append(row)
    return rows


# ---- one plant judged: what the tests assert and the bench prints ----

GOAL_RATIO = 1.2


def judge(case, seed=1):
    """Tune `case` with the firmware's RelayTune (noisy plant), run the resulting loop
    (firmware PID) on a setpoint and a load step without noise, and compare with the
    reference optimum of each task. Plain data."""
    r = autotune(case, seed=seed)
    out = {"plant": case.name, "kind": case.kind, "stable": bool(r.get("stable")),
           "reason": r.get("reason", ""), "relay_ticks": r.get("ticks"),
           "ku": r.get("ku"), "pu": r.get("pu")}
    if not out["stable"]:
        out["goal"] = False
        return out
    g = gains(r)
    m = r["model"]
    out.update(rule=r["rule"], why=r["why"], model={k: m[k] for k in ("K", "T", "L")},
               auto=g, ms=ms(case, g))
    ev = evaluate(case, g)
    starts = [g, dict(g, kp=g["kp"] * 0.5, ki=g["ki"] * 0.3, kd=g["kd"] * 0.5)]
    gs, ss, _ = optimum(case, "setpoint", starts)
    gl, sl, _ = optimum(case, "load", starts + ([gs] if gs else []))
    out["opt_setpoint"], out["opt_load"] = gs, gl
    sp, ld = ev["setpoint"], ev["load"]
    out["overshoot"] = sp["overshoot"]
    out["settle_s"] = sp["settle_s"] if sp["settled"] else None
    out["load_settle_s"] = ld["settle_s"] if ld["settled"] else None
    out["iae_setpoint"], out["iae_load"] = sp["iae"], ld["iae"]
    out["ref_iae_setpoint"] = ss["setpoint"]["iae"] if ss else None
    out["ref_iae_load"] = sl["load"]["iae"] if sl else None
    out["ratio_setpoint"] = sp["iae"] / out["ref_iae_setpoint"] if ss else None
    out["ratio_load"] = ld["iae"] / out["ref_iae_load"] if sl else None
    out["spec"] = bool(sp["settled"] and ld["settled"] and sp["overshoot"] <= OS_MAX)
    out["goal"] = bool(out["spec"] and out["ratio_setpoint"] is not None and
                       out["ratio_load"] is not None and
                       max(out["ratio_setpoint"], out["ratio_load"]) <= GOAL_RATIO)
    return out


def row(j):
    """One line of the table (text)."""
    if not j["stable"]:
        return f"{j['plant']:30s} refused: {j['reason']}"

    def f(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)
    a, s, l = j["auto"], j["opt_setpoint"] or {}, j["opt_load"] or {}
    return (f"{j['plant']:30s} {j['rule']:5s} kp {a['kp']:.3g}/{f(s.get('kp'), '{:.3g}')}"
            f"/{f(l.get('kp'), '{:.3g}')} ki {a['ki']:.3g}/{f(s.get('ki'), '{:.3g}')}"
            f"/{f(l.get('ki'), '{:.3g}')} kd {a['kd']:.3g}/{f(s.get('kd'), '{:.3g}')}"
            f"/{f(l.get('kd'), '{:.3g}')} b {weight(a):.2f}/{f(s and weight(s))} "
            f"os {100 * j['overshoot']:.1f}% "
            f"settle {f(j['settle_s'], '{:.3g}')}s/{f(j['load_settle_s'], '{:.3g}')}s "
            f"IAE ratio sp {f(j['ratio_setpoint'])} load {f(j['ratio_load'])} "
            f"{'met' if j['goal'] else 'MISSED'}")


def dev_plants(seeds=(7, 8, 9, 10), log=print):
    """The development plants of the non-FOPDT classes (these seeds, never the test
    ones), tuned, with the reference optimum of each task: {class: [(case, model, IAE*
    setpoint, IAE* load)]}."""
    dev = {"lag": [], "resonant": [], "fopdt": []}
    for seed in seeds:
        for c in family(seed, 3, ["second_order", "twotank", "dcmotor"]):
            r = autotune(c)
            m = r.get("model")
            if not r["stable"]:
                continue
            # the optima searched from the rule's gains too, as judge() does (from the
            # random sample alone they can stop at local optima: weaker references)
            g = gains(r)
            st = [g, dict(g, kp=g["kp"] * 0.5, ki=g["ki"] * 0.3, kd=g["kd"] * 0.5)]
            gs, ss, _ = optimum(c, "setpoint", st)
            gl, sl, _ = optimum(c, "load", st + ([gs] if gs else []))
            if ss and sl:
                dev.setdefault(m["class"], []).append((c, m, ss["setpoint"]["iae"],
                                                      sl["load"]["iae"]))
                log(f"{c.name}: {m['class']}")
    return dev


def worst_ratio(plants, gains_of, os_max, ms_max, settle=True):
    """The largest IAE ratio (setpoint or load, to each plant's optimum) of the rule
    gains_of(model, dt) on these plants, plus a penalty growing with each miss of the
    margins (Ms <= ms_max, overshoot <= os_max, settling), so that a search can find
    its way back from an infeasible start. settle=False: a loop that does not settle
    within the horizon is not penalised (a lightly damped plant's known miss)."""
    w, pen = 0.0, 0.0
    for c, m, S, Ld in plants:
        g = gains_of(m, c.dt)
        msv = ms(c, g)
        if msv > 3.0:
            pen += 10.0 * msv
            continue
        pen += 20.0 * max(0.0, msv - ms_max)
        sp = simulate(c, g, "setpoint", False)
        pen += 20.0 * max(0.0, sp["overshoot"] - os_max)
        ld = simulate(c, g, "load", False)
        if settle:
            pen += (0.0 if sp["settled"] else 5.0) + (0.0 if ld["settled"] else 5.0)
        w = max(w, min(sp["iae"] / S, 50.0), min(ld["iae"] / Ld, 50.0))
    return w + (10.0 + pen if pen else 0.0)


def derive_class_constants(seeds=(7, 8, 9, 10), dev=None, log=print, os_lag=0.07,
                           ms_lag=1.92):
    """autotune._DI and autotune._POINT (the "lag" and "resonant" classes): on the
    development plants of each class (these seeds, never the test ones), the constants
    (and setpoint weight) minimising the largest IAE ratio, with margins: overshoot
    <= 6 %, Ms <= 1.85 ("lag") / 1.8 ("resonant"). About 5 minutes."""
    import cyphy_node.autotune as AT

    dev = dev_plants(seeds, log) if dev is None else dev
    out = {}
    saved = AT._DI, AT._POINT

    def di(p):
        AT._DI = (p[0], p[1], p[2], p[3], p[4], min(1.0, max(0.0, p[5])))
        return AT.tune

    def point(p):
        AT._POINT = (math.exp(p[0]), p[1], math.exp(p[2]), min(1.0, max(0.0, p[3])))
        return AT.tune

    try:
        x, v = nelder_mead(lambda p: worst_ratio(dev["lag"], di(p), os_lag, ms_lag),
                           [0.089, -0.002, 10.4, 4.1, 0.15, 0.27],
                           [0.01, 0.001, 1.0, 0.4, 0.03, 0.1], iters=150)
        out["_DI"] = (round(x[0], 4), round(x[1], 5), round(x[2], 3), round(x[3], 3),
                      round(x[4], 4), round(min(1.0, max(0.0, x[5])), 3))
        log(f"_DI {out['_DI']}: worst ratio {v:.3f} on {len(dev['lag'])} plants")
        x, v = min((nelder_mead(lambda p: worst_ratio(dev["resonant"], point(p), 0.06, 1.8,
                                                       settle=False),
                                [math.log(x0[0]), x0[1], math.log(x0[2]), x0[3]],
                                [0.2, 0.2, 0.3, 0.2], iters=80)
                    for x0 in ([0.61, 0.76, 2.8, 0.5], [0.7, 0.6, 4.0, 0.8])),
                   key=lambda t: t[1])
        out["_POINT"] = (round(math.exp(x[0]), 3), round(x[1], 3), round(math.exp(x[2]), 3),
                         round(min(1.0, max(0.0, x[3])), 3))
        log(f"_POINT {out['_POINT']}: worst ratio {v:.3f} on {len(dev['resonant'])} plants")
    finally:
        AT._DI, AT._POINT = saved
    return out


# ---- the "sopdt" rule's table (autotune._SOPDT), derived like the FOPDT one ----

def sopdt_case(zeta, lwn):
    """Normalised underdamped second order plus dead time: K = 1, wn = 1, dead time
    lwn / wn, sampled like the family's (dt about min(L, 0.5 / wn) / 8, on the dead-time
    buffer's grid so that the delay is exact)."""
    L = lwn
    nb = max(1, math.ceil(L / 0.1 - 1e-9))          # _plant's dead-time buffer: h = L / nb
    h = L / nb
    dt = h / math.ceil(h / (min(L, 0.5) / 8) - 1e-9)
    n = int(max(40 * L, 30.0, 6.0 / zeta) / dt)
    return Case(f"sopdt zeta={zeta:.2f} L wn={lwn:.2f}", "second_order",
                {"type": "second_order", "gain": 1.0, "wn_rad_s": 1.0, "zeta": zeta,
                 "dead_time_s": L},
                "drive", "y", {"drive": 50.0, "y": 50.0}, 50.0, 0.0, 100.0, 10.0, 1.0, 1.0,
                50.0, dt, n,
                lambda s: cmath.exp(-L * s) / (s * s + 2 * zeta * s + 1), 0.0,
                {"wn": 1.0, "zeta": zeta, "L": L})


def imc_sopdt(K, wn, zeta, L):
    """IMC / lambda tuning of the underdamped second order plus dead time (Rivera, Morari
    and Skogestad 1986): the PID's zeros cancel the plant's poles (Ti = 2 zeta / wn,
    Td = 1 / (2 zeta wn)), closed-loop time constant lambda = L: a feasible start."""
    ti, td = 2 * zeta / wn, 1 / (2 * zeta * wn)
    kp = ti / (K * 2 * L)
    return {"kp": kp, "ki": kp / ti, "kd": kp * td, "d_filter": td / 10, "p_on_m": False,
            "sp_weight": 1.0}


def derive_sopdt_table(zetas=(0.1, 0.2, 0.3, 0.45, 0.6, 0.8),
                       lwns=(0.05, 0.1, 0.15, 0.2, 0.3, 0.45, 0.7, 1.2),
                       log=print, os_max=0.04, ms_max=1.8, rule_starts=True):
    """Rows (zeta, Le wn, A, B, C, b) of autotune._SOPDT with Le the dead time plus half a
    sample (what the node's rule uses): kp = A / K, Ti = B / wn, Td = C / wn, setpoint
    weight b; each the minimax PID of the normalised plant (margins overshoot 6 %, Ms
    1.8; the table's: 4 %), as derive_table (rule_starts: the searches also start from
    the rule in force on the exact model)."""
    rows = []
    for z in zetas:
        for lwn in lwns:
            c = sopdt_case(z, lwn)
            s0 = imc_sopdt(1.0, 1.0, z, lwn + c.dt / 2)
            st = [s0]
            if rule_starts:            # the rule in force, on the exact model
                import cyphy_node.autotune as AT

                g = AT.tune({"class": "sopdt", "K": 1.0, "wn": 1.0, "zeta": z, "L": lwn,
                             "w": 1e9}, c.dt)
                st.append({k: g[k] for k in ("kp", "ki", "kd", "d_filter", "p_on_m",
                                             "sp_weight")})
            gs, ss, _ = optimum(c, "setpoint", st)
            gl, sl, _ = optimum(c, "load", st + ([gs] if gs else []))
            if not (ss and sl):
                log(f"zeta {z} L wn {lwn}: no optimum")
                continue
            r, g = minimax(c, ss["setpoint"]["iae"], sl["load"]["iae"],
                           [gs, gl] + st[1:], os_max=os_max, ms_max=ms_max)
            le = lwn + c.dt / 2
            row = (z, round(le, 4), round(g["kp"], 4), round(g["kp"] / g["ki"], 4),
                   round(g["kd"] / g["kp"], 4), round(g["sp_weight"], 3))
            log(f"zeta {z} L wn {lwn}: ratio {r:.3f} row {row}")
            rows.append(row)
    return rows
