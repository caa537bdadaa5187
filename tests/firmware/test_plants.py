"""Sim board plant models (boards/sim/rom/_plant.py) against their analytic solutions.

Every model test runs the same script on CPython and on the real MicroPython runtime (the
`run` fixture); the script prints one JSON line for the CPython side to check.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROM = Path(__file__).resolve().parents[2] / "boards" / "sim" / "rom"
PRELUDE = f"import sys\nsys.path.append({str(ROM)!r})\nimport _plant, math, json\n"
G = 9.81


def run_cpython(script: str) -> str:
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"CPython exited with {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
    return r.stdout


class _Runner:
    """run(body) -> the JSON of the script's last line; run.rows(body) -> every line's JSON
    (long records go out a line at a time: one big JSON string needs a contiguous block
    that a fragmented MicroPython heap may not have)."""

    def __init__(self, runtime, mpy):
        self.runtime, self.mpy = runtime, mpy

    def rows(self, body: str):
        script = PRELUDE + textwrap.dedent(body)
        if self.runtime == "micropython":
            out = self.mpy(script, heap="1M")
        else:
            out = run_cpython(script)
        return [json.loads(line) for line in out.strip().splitlines()]

    def __call__(self, body: str):
        return self.rows(body)[-1]


def _runner(runtime, mpy):
    return _Runner(runtime, mpy)


@pytest.fixture(params=["cpython", "micropython"])
def run(request, mpy):
    return _runner(request.param, mpy)


@pytest.fixture(scope="module")
def plant():
    """The module imported into this CPython process (for error-message tests)."""
    spec = importlib.util.spec_from_file_location("_plant", ROM / "_plant.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- FOPDT thermal
@pytest.mark.parametrize("dt", [0.1, 0.7, 5.0])
def test_fotd_open_loop_step_matches_analytic(run, dt):
    K, tau, theta, amb, u = 0.9, 160.0, 12.0, 20.0, 50.0
    res = run.rows(f"""
        p = _plant.make({{"type": "fotd", "gain": {K}, "tau_s": {tau}, "dead_time_s": {theta},
                         "ambient": {amb}}})
        p.set_input("heater", {u})
        k = 0
        while p.time_s < 900 - 1e-9:
            p.step({dt})
            k += 1
            print(json.dumps([p.time_s, p.true("temperature")]))
    """)
    assert len(res) == round(900 / dt)
    for t, T in res:
        if t <= theta + 1e-9:
            assert T == pytest.approx(amb, abs=1e-12), t  # nothing moves during the dead time
        else:
            rise = K * u * (1 - math.exp(-(t - theta) / tau))
            assert abs((T - amb) - rise) <= 0.01 * rise, (t, T, rise)
            assert abs((T - amb) - rise) <= 1e-9, (t, T, rise)  # exact discretisation


def test_fotd_dead_time_applies_to_later_input_changes(run):
    res = run("""
        p = _plant.make({"type": "fotd", "dead_time_s": 12, "initial": {"heater": 10, "temperature": 29}})
        seen = []
        for k in range(400):
            if k == 100:
                p.set_input("heater", 60)      # at t = 10 s
            p.step(0.1)
            seen.append(p.true("temperature"))
        print(json.dumps(seen))
    """)
    # started at equilibrium (20 + 0.9 * 10 = 29): flat until 10 + 12 s, then rising
    assert all(abs(T - 29.0) < 1e-9 for T in res[:220])
    t = 40.0 - 22.0
    assert res[-1] == pytest.approx(29.0 + 0.9 * 50 * (1 - math.exp(-t / 160)), abs=1e-9)


# ---------------------------------------------------------------- DC motor
def motor_step(t, V=12.0, J=0.01, b=0.1, K=0.01, R=1.0, L=0.5):
    """Analytic speed step response: two real poles, no zeros."""
    tr, det = -(R / L + b / J), (R * b + K * K) / (L * J)
    p1 = tr / 2 + math.sqrt(tr * tr / 4 - det)
    p2 = tr / 2 - math.sqrt(tr * tr / 4 - det)
    wss = K * V / (R * b + K * K)
    return wss * (1 + (p2 * math.exp(p1 * t) - p1 * math.exp(p2 * t)) / (p1 - p2)), wss, -1 / p1


@pytest.mark.parametrize("dt", [0.001, 0.05, 0.5])
def test_dcmotor_step_response_and_steady_state(run, dt):
    res = run.rows(f"""
        p = _plant.make({{"type": "dcmotor"}})
        p.set_input("voltage", 12.0)
        while p.time_s < 10 - 1e-9:
            p.step({dt})
            print(json.dumps([p.time_s, p.true("speed"), p.true("current")]))
    """)
    assert len(res) == round(10 / dt)
    _, wss, tau_dominant = motor_step(0.0)
    assert tau_dominant == pytest.approx(0.5, rel=0.01)  # the electrical pole dominates here
    t_end, w_end, i_end = res[-1]
    assert t_end == pytest.approx(10.0)
    assert w_end == pytest.approx(wss, rel=0.01)
    assert w_end == pytest.approx(0.01 * 12.0 / (1.0 * 0.1 + 0.01 ** 2), rel=1e-6)
    assert i_end == pytest.approx(0.1 * w_end / 0.01, rel=1e-6)  # K i = b w
    for t, w, _ in res:
        assert w == pytest.approx(motor_step(t)[0], abs=0.01 * wss), t
    # time scale: 63 % of the final speed is reached near 0.5 s + the fast pole's lag
    t63 = next(t for t, w, _ in res if w >= 0.632 * wss)
    assert 0.5 <= t63 <= 0.7 + dt


def rk4_reference(f, x, T, h):
    """Fine fixed-step RK4 of dx/dt = f(x), x a tuple: the yardstick for the models."""
    for _ in range(round(T / h)):
        a = f(x)
        b = f(tuple(xi + h / 2 * ai for xi, ai in zip(x, a)))
        c = f(tuple(xi + h / 2 * bi for xi, bi in zip(x, b)))
        d = f(tuple(xi + h * ci for xi, ci in zip(x, c)))
        x = tuple(xi + h / 6 * (ai + 2 * bi + 2 * ci + di) for xi, ai, bi, ci, di in zip(x, a, b, c, d))
    return x


@pytest.mark.parametrize("params", [
    dict(J=0.01, b=0.1, K=0.01, R=1.0, L=0.5),        # anchors: two real poles
    dict(J=0.01, b=0.001, K=0.5, R=1.0, L=0.001),     # complex pair
    dict(J=1.0, b=1.0, K=1e-3, R=1.0, L=1.0),         # (nearly) repeated pole
])
@pytest.mark.parametrize("dt", [0.001, 0.0137, 0.3])
def test_dcmotor_exact_discretisation_for_any_poles_and_step(plant, params, dt):
    m = plant.make({"type": "dcmotor", "load_torque": 0.001, **params})
    m.set_input("voltage", 6.0)
    n = round(0.9 / dt)
    for _ in range(n):
        m.step(dt)
    J, b, K, R, L = (params[k] for k in "JbKRL")
    i, w = rk4_reference(lambda x: ((6.0 - R * x[0] - K * x[1]) / L, (K * x[0] - b * x[1] - 0.001) / J),
                         (0.0, 0.0), n * dt, 1e-4)
    assert m.true("speed") == pytest.approx(w, rel=1e-9)
    assert m.true("current") == pytest.approx(i, rel=1e-9)


def test_dcmotor_load_torque_and_voltage_clamp(run):
    res = run("""
        p = _plant.make({"type": "dcmotor", "disturbances": [{"at_s": 5, "input": "load_torque", "value": 0.005}]})
        p.set_input("voltage", 50)          # clamped to vmax = 12 V
        v = p.get_input("voltage")
        w = []
        for k in range(1500):
            p.step(0.01)
            if k in (498, 499, 500, 501):
                w.append(p.true("speed"))
        print(json.dumps([v, w, p.true("speed"), p.limits("voltage")]))
    """)
    v, around5, w_end, lim = res
    assert v == 12.0 and lim == [0.0, 12.0]
    w_free = 0.01 * 12 / (0.1 + 1e-4)
    assert around5[0] == pytest.approx(around5[1], rel=1e-3)  # steady before 5 s
    assert around5[1] > around5[2] + 1e-7  # the load brakes from t = 5 s
    assert w_end == pytest.approx((0.01 * 12 - 1.0 * 0.005) / (1.0 * 0.1 + 1e-4), rel=0.01)
    assert w_end < w_free


# ---------------------------------------------------------------- two tanks
@pytest.mark.parametrize("dt", [1.0, 20.0])
def test_twotank_equilibrium_matches_analytic(run, dt):
    res = run(f"""
        p = _plant.make({{"type": "twotank"}})
        p.set_input("pump", 3.0)
        lo = 1.0
        while p.time_s < 4000 - 1e-9:
            p.step({dt})
            lo = min(lo, p.true("h1"), p.true("h2"))
        print(json.dumps([p.true("h1"), p.true("h2"), lo, p.k, p.a1, p.a2]))
    """)
    h1, h2, lo, k, a1, a2 = res
    q = k * 3.0
    assert lo >= 0.0
    assert h1 == pytest.approx((q / (a1 * math.sqrt(2 * G))) ** 2, rel=0.01)
    assert h2 == pytest.approx((q / (a2 * math.sqrt(2 * G))) ** 2, rel=0.01)


@pytest.mark.parametrize("dt", [0.1, 1.0, 10.0])
def test_twotank_transient_matches_fine_reference(plant, dt):
    p = plant.make({"type": "twotank", "initial": {"h1": 0.15, "h2": 0.02}})
    p.set_input("pump", 2.0)
    for _ in range(round(60 / dt)):
        p.step(dt)
    c1, c2, q = p.a1 * math.sqrt(2 * G), p.a2 * math.sqrt(2 * G), p.k * 2.0
    h1, h2 = rk4_reference(lambda x: ((q - c1 * math.sqrt(x[0])) / p.A1,
                                      (c1 * math.sqrt(x[0]) - c2 * math.sqrt(x[1])) / p.A2),
                           (0.15, 0.02), 60.0, 0.005)
    assert abs(p.true("h1") - h1) < 1e-5 and abs(p.true("h2") - h2) < 1e-5  # 0.01 mm


def test_twotank_never_negative_and_overflow_clamps(run):
    res = run("""
        p = _plant.make({"type": "twotank", "initial": {"h1": 0.2, "h2": 0.2}})
        lo, hi = 1.0, 0.0
        for k in range(400):            # drain with big steps
            p.step(5.0)
            lo = min(lo, p.true("h1"), p.true("h2"))
        drained = [p.true("h1"), p.true("h2")]
        p.set_input("pump", 99)         # clamped to vmax = 10 V: more than the outlets pass
        for k in range(3000):
            p.step(1.0)
            hi = max(hi, p.true("h1"), p.true("h2"))
            lo = min(lo, p.true("h1"), p.true("h2"))
        print(json.dumps([lo, hi, drained, p.true("h1"), p.true("h2"), p.get_input("pump")]))
    """)
    lo, hi, drained, h1, h2, pump = res
    assert lo >= 0.0
    assert max(drained) < 1e-6
    assert pump == 10.0
    assert hi <= 0.2
    assert h1 == 0.2 and h2 == 0.2  # both full, the surplus spills over


def test_twotank_outflow_valve_disturbance(run):
    res = run("""
        p = _plant.make({"type": "twotank", "disturbances": [{"at_s": 4000, "input": "valve", "value": 0.9}]})
        p.set_input("pump", 3.0)
        for k in range(4000):
            p.step(1.0)
        before = p.true("h2")
        for k in range(6000):
            p.step(1.0)
        print(json.dumps([before, p.true("h2"), p.k, p.a2]))
    """)
    before, after, k, a2 = res
    q = 3.0 * k
    assert before == pytest.approx((q / (a2 * math.sqrt(2 * G))) ** 2, rel=0.01)
    assert after == pytest.approx((q / (0.9 * a2 * math.sqrt(2 * G))) ** 2, rel=0.01)


# ---------------------------------------------------------------- noise and determinism
def test_noise_has_configured_std(run):
    res = run("""
        p = _plant.make({"type": "dcmotor", "noise": {"std": {"speed": 0.05, "current": 0.2}},
                         "initial": {"speed": 1.0, "current": 10.0}}, seed=7)
        out = []
        for name, x in (("speed", 1.0), ("current", 10.0)):
            s = s2 = 0.0
            n = 10000
            for _ in range(n):
                e = p.measure(name) - x
                s += e
                s2 += e * e
            out.append([s / n, math.sqrt(s2 / n - (s / n) ** 2)])
        print(json.dumps(out))
    """)
    for (mean, std), want in zip(res, (0.05, 0.2)):
        assert std == pytest.approx(want, rel=0.10)
        assert abs(mean) < 4 * want / 100  # 4 sigma of the mean over 10k samples


SEQUENCE = """
    p = _plant.make({"type": "fotd", "noise": {"std": 0.05}}, seed=%d)
    q = _plant.make({"type": "fotd", "noise": {"std": 0.05}}, seed=%d)
    a, b = [], []
    for k in range(20):
        p.set_input("heater", 3 * k)
        q.set_input("heater", 3 * k)
        p.step(0.5)
        q.step(0.5)
        a.append(p.measure("temperature"))
        b.append(q.measure("temperature"))
    r = _plant.Rng(%d)
    g = [r.gauss() for _ in range(20)]
    m = _plant.make({"type": "dcmotor", "disturbances": [{"at_s": 1, "input": "load_torque", "value": 0.004}]})
    t = _plant.make({"type": "twotank", "disturbances": [{"at_s": 30, "input": "valve", "value": 0.5}]})
    traj = []
    for k in range(20):
        m.set_input("voltage", k %% 7)
        t.set_input("pump", k %% 5)
        m.step(0.137)
        t.step(3.7)
        traj += [m.true("speed"), m.true("current"), t.true("h1"), t.true("h2")]
    print(json.dumps([a, a == b, g, traj]))
"""


def test_same_seed_same_sequence_on_cpython_and_micropython(mpy):
    cp = _runner("cpython", mpy)(SEQUENCE % (42, 42, 42))
    mp = _runner("micropython", mpy)(SEQUENCE % (42, 42, 42))
    assert cp[1] is True and mp[1] is True  # bit-identical within one runtime
    assert len(cp[0] + cp[2] + cp[3]) == len(mp[0] + mp[2] + mp[3]) == 120
    for x, y in zip(cp[0] + cp[2] + cp[3], mp[0] + mp[2] + mp[3]):
        assert abs(x - y) <= 1e-9 * abs(x), (x, y)
    assert len(set(cp[2])) == 20


def test_different_seeds_differ(run):
    a = run(SEQUENCE % (1, 2, 1))
    assert a[1] is False
    assert run(SEQUENCE % (2, 2, 2))[2] != a[2]


def test_rng_is_standard_normal_and_uniform_in_open_interval(plant):
    r = plant.Rng(3)
    us = [r.uniform() for _ in range(20000)]
    assert 0.0 < min(us) and max(us) < 1.0
    assert sum(us) / len(us) == pytest.approx(0.5, abs=0.01)
    g = [r.gauss() for _ in range(20000)]
    m = sum(g) / len(g)
    assert abs(m) < 0.03
    assert math.sqrt(sum(x * x for x in g) / len(g) - m * m) == pytest.approx(1.0, rel=0.03)


# ---------------------------------------------------------------- disturbances and faults
def test_disturbances_and_sensor_faults_take_effect_on_time(run):
    res = run("""
        p = _plant.make({"type": "fotd", "ambient": 20.0, "noise": {"std": 0.05},
                         "disturbances": [
                             {"at_s": 300.5, "input": "ambient", "value": 15.0},
                             {"at_s": 400, "sensor": "temperature", "fault": "stuck"},
                             {"at_s": 500, "sensor": "temperature", "fault": "noise", "std": 2.0},
                             {"at_s": 600, "sensor": "temperature", "fault": "none"}]}, seed=3)
        def rms_noise(n=5000):
            s2 = 0.0
            for _ in range(n):
                e = p.measure("temperature") - p.true("temperature")
                s2 += e * e
            return math.sqrt(s2 / n)
        T = {}
        last = None
        stuck = []
        for k in range(700):
            p.step(1.0)
            t = int(round(p.time_s))
            if t in (300, 301, 400):
                T[t] = p.true("temperature")
            if t == 399:
                last = p.measure("temperature")
            if 400 <= t < 500:
                stuck.append(p.measure("temperature"))
            if t == 550:
                s550 = rms_noise()
        s700 = rms_noise()
        print(json.dumps([T[300], T[301], T[400], last, stuck, s550, s700, p.pending()]))
    """)
    T300, T301, T400, last, stuck, s550, s700, pending = res
    assert T300 == 20.0                                              # not a moment early
    assert T301 == pytest.approx(15 + 5 * math.exp(-0.5 / 160), abs=1e-9)  # applied at 300.5 s
    assert T400 == pytest.approx(15 + 5 * math.exp(-99.5 / 160), abs=1e-9)
    assert len(stuck) == 100 and set(stuck) == {last}               # holds its last reading
    assert s550 == pytest.approx(2.0, rel=0.1)                      # noisy sensor
    assert s700 == pytest.approx(0.05, rel=0.1)                     # healthy again
    assert pending == 0


def test_disturb_at_run_time_and_param_change(run):
    res = run("""
        p = _plant.make({"type": "fotd", "dead_time_s": 0, "initial": {"heater": 50, "temperature": 65}})
        p.step(10)
        a = p.true("temperature")
        p.disturb(param="gain", value=0.5)                # now
        p.disturb({"at_s": 20, "input": "heater", "value": 0})  # later
        n = p.pending()
        p.step(10)
        b = p.true("temperature")
        p.step(5)
        c = p.true("temperature")
        p.disturb(sensor="temperature", fault="stuck", value=99.0)
        print(json.dumps([a, n, b, c, p.measure("temperature"), p.true("temperature")]))
    """)
    a, n, b, c, stuck, true = res
    assert a == pytest.approx(65.0, abs=1e-9)
    assert n == 1
    assert b == pytest.approx(45 + 20 * math.exp(-10 / 160), abs=1e-9)  # gain 0.9 -> 0.5
    assert c == pytest.approx(20 + (b - 20) * math.exp(-5 / 160), abs=1e-9)  # heater off at 20 s
    assert stuck == 99.0 and true == c


def test_set_input_clamps_to_the_physical_range(run):
    res = run("""
        p = _plant.make({"type": "fotd"})
        out = []
        for v in (150, -5, 42.5):
            p.set_input("heater", v)
            out.append(p.get_input("heater"))
        print(json.dumps([out, p.limits("heater"), p.inputs, p.outputs, p.loads]))
    """)
    assert res == [[100.0, 0.0, 42.5], [0.0, 100.0], ["heater"], ["temperature"], ["ambient"]]


# ---------------------------------------------------------------- invalid specs
BAD_SPECS = [
    ([1, 2], ["must be a dict"]),
    ({}, ["'type'", "fotd"]),
    ({"type": "boiler"}, ["'type'", "'boiler'"]),
    ({"type": "fotd", "tau_s": -1}, ["'tau_s'", "> 0"]),
    ({"type": "fotd", "tau_s": "fast"}, ["'tau_s'", "number"]),
    ({"type": "fotd", "gain": True}, ["'gain'", "number"]),
    ({"type": "fotd", "gain": float("nan")}, ["'gain'", "finite"]),
    ({"type": "fotd", "tau": 160}, ["'tau'", "unknown key", "'tau_s'"]),
    ({"type": "fotd", "dead_time_s": -2}, ["'dead_time_s'", ">= 0"]),
    ({"type": "fotd", "noise": {"std": -0.1}}, ["'noise.std'", ">= 0"]),
    ({"type": "fotd", "noise": {"sigma": 1}}, ["'noise.sigma'", "unknown key"]),
    ({"type": "fotd", "noise": 0.1}, ["'noise'", "dict"]),
    ({"type": "dcmotor", "noise": {"std": {"torque": 1}}}, ["'noise.std.torque'", "not an output"]),
    ({"type": "dcmotor", "vmin": 5, "vmax": 3}, ["'vmin'", "< vmax"]),
    ({"type": "dcmotor", "L": 0}, ["'L'", "> 0"]),
    ({"type": "twotank", "initial": {"h1": 0.5}}, ["'initial.h1'", "height"]),
    ({"type": "twotank", "initial": {"h3": 0.1}}, ["'initial.h3'", "unknown name"]),
    ({"type": "twotank", "valve": 1.5}, ["'valve'", "within"]),
    ({"type": "fotd", "disturbances": {"at_s": 1}}, ["'disturbances'", "list"]),
    ({"type": "fotd", "disturbances": [{"input": "ambient", "value": 1}]},
     ["'disturbances[0].at_s'", "required"]),
    ({"type": "fotd", "disturbances": [{"at_s": -1, "input": "ambient", "value": 1}]},
     ["'disturbances[0].at_s'", ">= 0"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "input": "fan", "value": 1}]},
     ["'disturbances[0].input'", "'fan'", "'ambient'"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "input": "ambient"}]},
     ["'disturbances[0].value'", "required"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "input": "ambient", "param": "gain", "value": 1}]},
     ["'disturbances[0]'", "exactly one"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "param": "dead_time_s", "value": 1}]},
     ["'disturbances[0].param'", "run time"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "param": "tau_s", "value": 0}]},
     ["'disturbances[0].value'", "> 0"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "sensor": "temperature", "fault": "broken"}]},
     ["'disturbances[0].fault'", "'stuck'"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "sensor": "temperature", "fault": "noise"}]},
     ["'disturbances[0].std'"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "sensor": "humidity", "fault": "stuck"}]},
     ["'disturbances[0].sensor'", "'humidity'"]),
    ({"type": "fotd", "disturbances": [{"at_s": 1, "input": "ambient", "value": 1, "ramp": 2}]},
     ["'disturbances[0].ramp'", "unknown key"]),
]


@pytest.mark.parametrize("spec,words", BAD_SPECS)
def test_invalid_spec_names_the_key(plant, spec, words):
    with pytest.raises(ValueError) as e:
        plant.make(spec)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_invalid_calls(plant):
    p = plant.make({"type": "dcmotor"})
    for call, word in ((lambda: p.set_input("torque", 1), "'torque'"),
                       (lambda: p.set_input("voltage", float("nan")), "number"),
                       (lambda: p.set_input("voltage", "high"), "number"),
                       (lambda: p.measure("position"), "'position'"),
                       (lambda: p.true("position"), "'position'"),
                       (lambda: p.step(-1), "dt_s"),
                       (lambda: p.step(float("inf")), "dt_s"),
                       (lambda: p.disturb(input="load_torque"), "'disturbance.value'"),
                       (lambda: p.disturb(sensor="speed", fault="stuck", std=1), "'disturbance.std'"),
                       (lambda: plant.make({"type": "fotd"}, seed="x"), "seed")):
        with pytest.raises(ValueError, match=word):
            call()


def test_micropython_gives_the_same_messages(mpy, plant):
    specs = [s for s, _ in BAD_SPECS if not any(isinstance(v, float) and v != v for v in
                                                (s.values() if isinstance(s, dict) else []))]
    body = f"""
        out = []
        for spec in {specs!r}:
            try:
                _plant.make(spec)
                out.append(None)
            except ValueError as e:
                out.append(str(e))
        print(json.dumps(out))
    """
    got = _runner("micropython", mpy)(body)
    for spec, msg in zip(specs, got):
        with pytest.raises(ValueError) as e:
            plant.make(spec)
        assert msg == str(e.value)


# ---------------------------------------------------------------- MicroPython footprint
def test_step_allocates_little_on_micropython(mpy):
    """step() builds no lists or dicts: what it allocates is boxed floats (32 bytes each in
    this build), a few dozen per step."""
    res = json.loads(mpy(PRELUDE + textwrap.dedent("""
        import gc
        out = []
        for spec, name, dt in (({"type": "fotd"}, "heater", 0.1), ({"type": "dcmotor"}, "voltage", 0.001),
                               ({"type": "twotank"}, "pump", 0.5)):
            p = _plant.make(spec)
            p.set_input(name, 5)
            p.step(dt)
            gc.collect()
            gc.disable()
            a = gc.mem_alloc()
            for _ in range(20):
                p.step(dt)
            out.append((gc.mem_alloc() - a) / 20)
            gc.enable()
            for _ in range(2000):       # and runs for long in the default 192K heap
                p.step(dt)
        print(json.dumps(out))
    """)))
    fotd, motor, tank = res
    assert fotd < 1024 and motor < 1024 and tank < 3072, res
