"""The REPL and console streams as a board's: code runs in __main__, tracebacks name
<stdin>, print() works with the heap locked, sys.stdin/stdout/stderr are the board's
stdio types, and sys has no exc_info (docs/boards.md, "ESP32 vs sim")."""

from __future__ import annotations

import pytest

from helpers import mpremote
from serial_console import Console


@pytest.fixture
def con(sim_node):
    with Console(sim_node.port) as c:
        c.raw()
        yield c


# ------------------------------------------------------------------ a. __main__, <stdin>
# micropython-lib's unittest.main(module="__main__") does `__import__(module)`, then
# collects TestCase subclasses with dir()/getattr() (python-stdlib/unittest/unittest/
# __init__.py, main() and TestSuite._load_module). DISCOVER does the same.
DISCOVER = """
class TestCase:
    pass
def _found():
    m = __import__("__main__")
    return m.__name__, sorted(n for n in dir(m) if isinstance(getattr(m, n), type)
                              and issubclass(getattr(m, n), TestCase) and getattr(m, n) is not TestCase)
"""


def test_raw_repl_code_runs_in_main(con):
    con.run(DISCOVER)
    con.run("class TestA(TestCase):\n    pass\n")
    out = con.run("class TestB(TestCase):\n    pass\nprint(_found())")
    assert out == "('__main__', ['TestA', 'TestB'])\r\n"
    # the module is __main__ itself: its dict is the REPL's globals, and nothing of the ROM's
    out = con.run("import __main__\nprint(__main__.__dict__ is globals(), __name__, __file__)\n"
                  "print([n for n in ('main', 'simboot', '_repl', '_board', '_args') if n in globals()])")
    assert out == "True __main__ <stdin>\r\n[]\r\n"


def test_mpremote_run_finds_tests_in_main(sim_node, tmp_path):
    script = tmp_path / "t.py"
    script.write_text(DISCOVER + "class TestX(TestCase):\n    pass\nprint(_found())\n")
    assert mpremote(sim_node.port, "run", script).strip() == "('__main__', ['TestX'])"


def test_tracebacks_name_stdin(sim_node, con):
    _, err = con.raw_exec(b"def f():\n    1/0\nf()")
    assert err == (b'Traceback (most recent call last):\r\n  File "<stdin>", line 3, in <module>\r\n'
                   b'  File "<stdin>", line 2, in f\r\nZeroDivisionError: divide by zero\r\n')
    _, err = con.raw_exec(b"1 +")
    assert err == b'Traceback (most recent call last):\r\n  File "<stdin>", line 1\r\nSyntaxError: invalid syntax\r\n'
    con.write(b"\x02")
    con.close()
    # mpremote exec goes through raw-paste
    p = mpremote_fail(sim_node.port, "exec", "def g():\n    raise KeyError(5)\ng()")
    assert '  File "<stdin>", line 3, in <module>\n  File "<stdin>", line 2, in g\nKeyError: 5' in p


def mpremote_fail(port: str, *args: str) -> str:
    from helpers import run, tool

    p = run([tool("mpremote"), "connect", port, *args], ok=False)
    assert p.returncode != 0
    return p.stdout + p.stderr


# ------------------------------------------------------------------ b. print, heap locked
def test_print_with_the_heap_locked(con):
    out = con.run(
        "import micropython, sys\n"
        "n = 12345\n"
        "s = 'literal'\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    print('literal')\n"
        "    print(n)\n"
        "    print(-7, 8, s, sep=',', end='!\\n')\n"
        "    print()\n"
        "    print('nul\\x00inside')\n"
        "    sys.stdout.write('w\\n')\n"
        "    sys.stdout.buffer.write(b'raw\\n')\n"
        "    print(n, file=sys.stderr)\n"
        "finally:\n"
        "    micropython.heap_unlock()\n"
    )
    assert out == "literal\r\n12345\r\n-7,8,literal!\r\n\r\nnul\x00inside\r\nw\r\nraw\n12345\r\n"


# ------------------------------------------------------------------ c. sys.stdin/stdout/stderr
def test_stdio_types_as_on_a_board(con):
    out = con.run(
        "import sys\n"
        "print(sys.stdin, sys.stdout, sys.stderr, sys.stdin.buffer)\n"
        "print(type(sys.stdout).__name__, type(sys.stdout.buffer).__name__)\n"
        "print(sys.stdin.buffer is sys.stdout.buffer is sys.stderr.buffer, sys.stdout.buffer.buffer is sys.stdout.buffer)\n"
        "print(hasattr(sys.stdout, 'flush'), sys.stdout.close() is sys.stdout)\n"
    )
    assert out == ("<io.TextIOWrapper 0> <io.TextIOWrapper 1> <io.TextIOWrapper 2> <io.FileIO 0>\r\n"
                   "TextIOWrapper FileIO\r\nTrue True\r\nFalse True\r\n")
    out = con.run("import sys\nn = sys.stdout.write('h\\u00e9\\n')\nm = sys.stdout.buffer.write(b'ab')\nprint()\nprint(n, m)")
    assert out == "h\u00e9\r\nab\r\n4 2\r\n"  # byte counts, as a board's stream write returns
    out = con.run(
        "import sys\n"
        "for f, op in ((sys.stdout, 'read'), (sys.stdin, 'write')):\n"
        "    try:\n"
        "        getattr(f, op)(1) if op == 'read' else f.write('x')\n"
        "    except OSError as e:\n"
        "        print(op, e.errno)\n"
    )
    assert out == "read 1\r\nwrite 1\r\n"  # EPERM


def test_stdin_reads_and_poll(con):
    code = (b"import sys, select\n"
            b"p = select.poll()\n"
            b"p.register(sys.stdin, select.POLLIN)\n"
            b"print('ready', p.poll(0))\n"
            b"b = sys.stdin.buffer.read(3)\n"
            b"buf = bytearray(4)\n"
            b"n = sys.stdin.buffer.readinto(buf, 2)\n"
            b"t = sys.stdin.read(2)\n"
            b"l = sys.stdin.readline()\n"
            b"ev = p.poll(1000)\n"
            b"print(repr(b), n, bytes(buf[:2]), repr(t), repr(l), [e for _, e in ev])\n"
            b"print(repr(sys.stdin.read(1)))\n")
    con.write(code + b"\x04")
    con.read_until(b"OK")
    assert con.read_until(b"\r\n") == b"ready []\r\n"
    # raw bytes stay raw; text reads turn CR into LF (sys_stdio_mphal.c stdio_read)
    con.write(b"a\rbcdx\ryz\rQ")
    assert con.read_until(b"\x04") == b"b'a\\rb' 2 b'cd' 'x\\n' 'yz\\n' [1]\r\n'Q'\r\n\x04"
    assert con.read_until(b"\x04") == b"\x04"


# ------------------------------------------------------------------ d. no sys.exc_info
def test_sys_has_no_exc_info(con):
    assert con.run("import sys\nprint(hasattr(sys, 'exc_info'))") == "False\r\n"
