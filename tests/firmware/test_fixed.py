"""Fixed-point conventions (firmware/lib/cyphy_node/fixed.py): exact rounding, precision,
saturation, and the ESP32 small-int bounds of every intermediate."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from reference_pid import Small, wrap  # also puts firmware/lib on sys.path

from cyphy_node import fixed
from cyphy_node.fixed import (SMALL_MAX, SMALL_MIN, VAL_MAX, VAL_MIN, Acc, Gain, clamp,
                              from_fixed, sat_add, sat_sub, to_fixed)

small_ints = st.one_of(st.integers(SMALL_MIN, SMALL_MAX),
                       st.sampled_from([SMALL_MIN, SMALL_MAX, 0, 1, -1, 1023, 1024, -1024, -1025,
                                        VAL_MAX, VAL_MIN, (1 << 20) - 1, -(1 << 20)]))
# Gains from 1e-12 to 2**30, spread over the decades (plus the exact edges).
gains = st.one_of(st.floats(-12, math.log10(2**30 - 1)).map(lambda e: 10.0 ** e),
                  st.sampled_from([0.0, 0.5, 1.0, 1.0 - 2**-22, 2.0**-20, 1023.999, 2**30 - 1.0]))


def _exact(g: Gain) -> Fraction:
    return g.i + Fraction(g.m, 2 ** (20 + g.sh))


def test_constants():
    assert (SMALL_MIN, SMALL_MAX) == (-(1 << 30), (1 << 30) - 1)
    assert fixed.SCALE == 1000
    assert VAL_MAX - VAL_MIN <= SMALL_MAX          # a difference of two signals fits


@settings(max_examples=400, deadline=None)
@given(g=gains)
def test_gain_representation_precision(g):
    G = Gain(g)
    assert 0 <= G.m < 1 << 20
    if g >= 2.0 ** -42:                            # full precision down to ~2e-13
        assert abs(float(_exact(G)) - g) <= g * 2.0 ** -20
    else:
        assert abs(float(_exact(G)) - g) <= 2.0 ** -63
    assert G.value() == float(_exact(G))


@settings(max_examples=1500, deadline=None)
@given(g=gains, x=small_ints)
def test_gain_mul_rounds_to_nearest_exactly_or_saturates(g, x):
    G = wrap(Gain(g))                              # every intermediate checked for ESP32
    r = G.mul(Small(x))
    exact = x * _exact(G)
    if -SMALL_MAX <= exact <= SMALL_MAX:
        assert r == math.floor(exact + Fraction(1, 2))
    elif SMALL_MIN <= exact < -SMALL_MAX:
        assert r in (SMALL_MIN, math.floor(exact + Fraction(1, 2)))
    else:
        assert r == (SMALL_MAX if exact > 0 else SMALL_MIN)     # saturated, right sign


@given(a=small_ints, b=small_ints)
def test_saturating_add_sub(a, b):
    assert sat_add(Small(a), Small(b)) == clamp(a + b, SMALL_MIN, SMALL_MAX)
    assert sat_sub(Small(a), Small(b)) == clamp(a - b, SMALL_MIN, SMALL_MAX)


@given(vs=st.lists(st.integers(-(1 << 29), 1 << 29), max_size=400))
def test_wide_accumulator(vs):
    acc = wrap(Acc())
    for v in vs:
        acc.add(Small(v))
    assert acc.value() == sum(vs)


def test_to_fixed_and_back():
    assert to_fixed(23.456) == 23456
    assert to_fixed(-0.0004) == 0
    assert to_fixed(12) == 12000                   # ints convert exactly
    assert from_fixed(23456) == pytest.approx(23.456)
    assert to_fixed(536870.911) == VAL_MAX


@pytest.mark.parametrize("x, lo, hi, msg", [
    (536871.0, VAL_MIN, VAL_MAX, r"above the limit 536870\.911$"),
    (-536871.0, VAL_MIN, VAL_MAX, r"below the limit -536870\.911$"),
    (1.5, 0, 1000, r"1\.5 is above the limit 1\.0$"),
])
def test_to_fixed_range_errors_name_the_limit(x, lo, hi, msg):
    # in engineering units, as the user wrote them (not milli-units)
    with pytest.raises(ValueError, match=msg):
        to_fixed(x, lo, hi)


@pytest.mark.parametrize("g", [-1.0, float("nan"), 2.0**30, float("inf")])
def test_gain_rejects_out_of_range(g):
    with pytest.raises(ValueError, match=r"outside \[0, 2\*\*30\)"):
        Gain(g)


def test_same_results_on_micropython(mpy):
    """MicroPython's ints must give exactly CPython's results (>> and & on negatives, //),
    so the CPython bounds checks speak for the code that runs on the node."""
    rnd = random.Random(7)
    cases = [(10.0 ** rnd.uniform(-9, 6), rnd.randint(SMALL_MIN, SMALL_MAX)) for _ in range(300)]
    cases += [(g, x) for g in (0.3, 1.7, 1e-7) for x in (SMALL_MIN, SMALL_MAX, -1025, -1, 0, 1023)]
    vs = [rnd.randint(-(1 << 29), 1 << 29) for _ in range(2000)]
    script = (
        "import json\n"
        "from cyphy_node.fixed import Gain, Acc, sat_add, sat_sub\n"
        f"cases = {cases!r}\n"
        f"vs = {vs!r}\n"
        "out = [Gain(g).mul(x) for g, x in cases]\n"
        "out += [sat_add(x, y) for (_, x), (_, y) in zip(cases, cases[1:])]\n"
        "out += [sat_sub(x, y) for (_, x), (_, y) in zip(cases, cases[1:])]\n"
        "a = Acc()\n"
        "for v in vs:\n"
        "    a.add(v)\n"
        "print(json.dumps([out, a.hi, a.lo]))\n"
    )
    got, hi, lo = json.loads(mpy(script))
    want = [Gain(g).mul(x) for g, x in cases]
    want += [sat_add(x, y) for (_, x), (_, y) in zip(cases, cases[1:])]
    want += [sat_sub(x, y) for (_, x), (_, y) in zip(cases, cases[1:])]
    assert got == want
    assert hi * 2**20 + lo == sum(vs)
