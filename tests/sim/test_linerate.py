"""`--baud N` makes bytes cross the emulated UART at N/10 bytes per second (8N1).

Lower bounds are exact (the sim may never be faster than the line); upper bounds are
loose because CI machines are shared and noisy.
"""

from __future__ import annotations

import time

from serial_console import Console


def test_output_is_paced_at_115200(sim_nodes):
    node = sim_nodes("paced", baud=115200)
    with Console(node.port) as con:
        con.raw()
        n = 5000
        t0 = time.monotonic()
        out, err = con.raw_exec(b"print('x' * %d)" % (n - 2))
        elapsed = time.monotonic() - t0
    assert err == b"" and len(out) == n
    line_time = n * 10 / 115200
    assert elapsed >= 0.95 * line_time
    assert elapsed < 3 * line_time + 1.0


def test_input_is_paced_at_9600(sim_nodes):
    node = sim_nodes("slow", baud=9600)
    with Console(node.port, baud=9600) as con:
        con.raw()
        src = b"x = '" + b"a" * 950 + b"'"
        t0 = time.monotonic()
        con.write(src + b"\x04")
        con.read_until(b"OK", timeout=20)
        elapsed = time.monotonic() - t0
    line_time = (len(src) + 1) * 10 / 9600
    assert elapsed >= 0.95 * line_time
    assert elapsed < 3 * line_time + 1.0


def test_baud_zero_is_not_paced(sim_node):
    with Console(sim_node.port) as con:
        con.raw()
        t0 = time.monotonic()
        out, _ = con.raw_exec(b"for i in range(200): print('y' * 498)")
        elapsed = time.monotonic() - t0
    assert len(out) == 200 * 500
    assert elapsed < 100_000 * 10 / 115200  # well under what 115200 baud would take


def test_output_never_blocks_without_a_host(sim_nodes):
    """With nobody on the port the node keeps printing at line rate; bytes are dropped."""
    node = sim_nodes("nohost", baud=115200)
    main = (
        "import time\n"
        "n = 0\n"
        "t0 = time.ticks_ms()\n"
        "while time.ticks_diff(time.ticks_ms(), t0) < 1500:\n"
        "    print('z' * 60)\n"
        "    n += 1\n"
    )
    with Console(node.port) as con:
        con.raw()
        _, err = con.raw_exec(b"f = open('main.py', 'w'); f.write(%r); f.close()" % main.encode())
        assert err == b""
        con.write(b"import machine; machine.reset()\x04")
        con.read_until(b"OK")
    time.sleep(2.5)  # main.py runs with no host holding the port
    with Console(node.port) as con:
        con.raw()
        out, err = con.raw_exec(b"print(n)")
    lines = int(out)
    # 62 bytes a line at 11520 B/s is ~185 lines/s; a blocked UART would stop after a few.
    assert lines > 150, lines
