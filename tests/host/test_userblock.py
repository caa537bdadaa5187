"""`cyphy check` on a config with user blocks (host/cyphy/userblock.py): before a module
reaches a node its tick runs under heap_lock on the 32-bit MicroPython (big ints) and on
the Unix port (floats, and frames MicroPython heap-allocates, counted with mem_total), and
its time per tick at the chip's speed is held against its budget. Each refusal names the
block, the module's line where it can, and what to do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CYPHY = str(Path(sys.executable).with_name("cyphy"))
GOOD = Path(__file__).resolve().parents[1] / "hil" / "user_blocks" / "mypi.py"

BAD = {
    "floaty": ("class Block:\n"
               "    def __init__(self, params, dt):\n"
               "        self.k = params['k']\n"
               "\n"
               "    def tick(self, x, y):\n"
               "        v = x[0] * self.k\n"
               "        y[0] = int(v)\n",
               "allocates in tick on the 32-bit MicroPython at floaty.py line 6: v = x[0] * self.k"),
    "wide": ("class Block:\n"
             "    def __init__(self, params, dt):\n"
             "        pass\n"
             "\n"
             "    def tick(self, x, y):\n"
             "        v = x[0] * 100000\n"
             "        y[0] = v >> 8\n",
             "allocates in tick on the 32-bit MicroPython at wide.py line 6: v = x[0] * 100000"),
    "framey": ("class Block:\n"
               "    def __init__(self, params, dt):\n"
               "        pass\n"
               "\n"
               "    def tick(self, x, y):\n"
               "        a = x[0]\n"
               "        b = a + 1\n"
               "        c = b + 1\n"
               "        d = c + 1\n"
               "        e = d + 1\n"
               "        f = e + 1\n"
               "        g = f + 1\n"
               "        h = g + 1\n"
               "        i = h + 1\n"
               "        j = i + 1\n"
               "        y[0] = a + b + c + d + e + f + g + h + i + j\n",
               "allocates in tick on the unix MicroPython: a function's frame is heap-allocated "
               "on every call (more than 11 words of locals and stack: split it into smaller "
               "methods) (the function starting at framey.py line 6: a = x[0])"),
    "divzero": ("class Block:\n"
                "    def __init__(self, params, dt):\n"
                "        self.d = 0\n"
                "\n"
                "    def tick(self, x, y):\n"
                "        y[0] = x[0] // self.d\n",
                "raises in tick on the 32-bit MicroPython at divzero.py line 6: "
                "y[0] = x[0] // self.d (ZeroDivisionError: divide by zero)"),
    "nostart": ("class Block:\n"
                "    def __init__(self, params, dt):\n"
                "        self.k = params['missing']\n"
                "\n"
                "    def tick(self, x, y):\n"
                "        y[0] = 0\n",
                "does not start on the 32-bit MicroPython at nostart.py line 3: "
                "self.k = params['missing'] (KeyError: missing)"),
}


def config(module: str, budget_us: int | None = None) -> dict:
    b = {"name": "pi", "type": "user", "module": module, "inputs": ["temp"],
         "params": {"setpoint": 60, "kp": 4.9, "ki": 0.034, "k": 0.5},
         "actuators": {"out": "heater"}, "range": [0, 100]}
    if budget_us is not None:
        b["budget_us"] = budget_us
    return {"name": "oven", "comms_timeout_ms": 0, "channels": [
        {"name": "temp", "pin": 34, "kind": "adc", "units": "degC", "valid": [10, 149],
         "scale": {"mv_min": 0, "mv_max": 2450, "eng_min": 0, "eng_max": 150}},
        {"name": "heater", "pin": 25, "kind": "pwm", "range": [0, 100], "failsafe": 0}],
        "loops": [], "blocks": [b], "tasks": [{"name": "main", "rate_hz": 10, "order": ["pi"]}]}


def check(tmp_path: Path, module: str, source: str | None, budget_us: int | None = None):
    if source is not None:
        (tmp_path / f"{module}.py").write_text(source)
    f = tmp_path / "oven.json"
    f.write_text(json.dumps(config(module, budget_us)))
    r = subprocess.run([CYPHY, "check", str(f), "--psram", "--json"], capture_output=True,
                       text=True, timeout=120)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_an_allocation_free_user_block_fits_and_is_timed(tmp_path):
    r, rep = check(tmp_path, "mypi", GOOD.read_text())
    assert r.returncode == 0, r.stderr
    u = rep["user_blocks"]["pi"]
    assert u["allocation_free"] and u["budget_us"] == 20000          # a fifth of 100 ms
    assert 0 < u["tick_us"] < 5000
    assert rep["tasks"]["main"]["tick_us"] >= u["tick_us"]


@pytest.mark.parametrize("module", sorted(BAD))
def test_a_user_block_that_would_misbehave_on_the_chip_is_refused_with_its_line(tmp_path, module):
    src, why = BAD[module]
    r, rep = check(tmp_path, module, src)
    assert r.returncode == 1
    line = f'user block "pi" ({module}.py) {why}'
    if module == "nostart":             # the node would not boot: no RAM figure either
        assert rep["errors"] == [{"field": "blocks[0].module", "reason": line,
                                  "kind": "user block"}]
    else:
        assert rep["user_blocks"]["pi"]["why"] == why
        assert line in rep["reasons"]
    assert "Traceback" not in r.stderr


def test_a_user_block_over_its_budget_is_refused(tmp_path):
    r, rep = check(tmp_path, "mypi", GOOD.read_text(), budget_us=20)
    assert r.returncode == 1
    u = rep["user_blocks"]["pi"]
    assert u["allocation_free"] and u["tick_us"] > 20
    assert any("over its budget_us 20" in x for x in rep["reasons"])


def test_a_missing_module_is_one_line_naming_the_file(tmp_path):
    f = tmp_path / "oven.json"
    f.write_text(json.dumps(config("nowhere")))
    r = subprocess.run([CYPHY, "check", str(f)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"blocks[0].module: no file {tmp_path / 'nowhere.py'}" in r.stdout + r.stderr


def test_the_check_runs_an_instrumented_copy_that_behaves_like_the_module(tmp_path):
    # the markers change no result: the same outputs from the original and the copy
    from cyphy import userblock

    shutil.copy(GOOD, tmp_path / "orig.py")
    (tmp_path / "inst.py").write_text(userblock.instrumented(GOOD.read_text()))
    code = ("import sys\nsys.path.insert(0, %r)\nsys.path.insert(0, %r)\n"
            "from array import array\nimport orig, inst\nout = []\n"
            "for m in (orig, inst):\n"
            "    b = m.Block({'setpoint': 60, 'kp': 4.9, 'ki': 0.034}, 0.1)\n"
            "    x = array('i', [0]); y = array('i', [0]); r = []\n"
            "    for k in range(200):\n"
            "        x[0] = 20000 + k * 250\n"
            "        b.tick(x, y)\n"
            "        r.append(y[0])\n"
            "    out.append(r)\n"
            "print(out[0] == out[1], len(out[0]))\n") % (str(tmp_path),
                                                         str(Path(__file__).resolve().parents[2] / "firmware" / "lib"))
    r = subprocess.run([str(Path(sys.executable).with_name("micropython")), "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["True", "200"], r.stdout + r.stderr
