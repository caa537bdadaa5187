"""Console fidelity: the sim's REPL speaks byte for byte like MicroPython on an ESP32."""

from __future__ import annotations

import time

import pytest

from serial_console import BANNER_END, Console


@pytest.fixture
def con(sim_node):
    with Console(sim_node.port) as c:
        c.friendly()
        yield c


def put_file(con: Console, path: str, text: str) -> None:
    con.raw()
    out, err = con.raw_exec(b"f=open(%r,'w');f.write(%r);f.close()" % (path.encode(), text.encode()))
    assert err == b""
    con.write(b"\x02")
    con.read_until(BANNER_END)


def test_banner_and_prompt(con):
    con.write(b"\x02")
    got = con.read_until(BANNER_END)
    assert got.startswith(b"\r\nMicroPython v")
    assert b"; cyphy-sim with ESP32\r\n" in got


def test_cr_ends_line_and_output_uses_crlf(con):
    assert con.line(b"print('a\\nb')") == b"print('a\\nb')\r\na\r\nb\r\n>>> "
    # '\n' alone does not end a line, as on ESP32 (pytest-embedded appends it after '\r')
    con.write(b"x = 7\n")
    assert con.read_for(0.3) == b"x = 7"
    assert con.line(b"") == b"\r\n>>> "
    assert con.line(b"x * 6") == b"x * 6\r\n42\r\n>>> "


def test_platform_and_uname(con):
    assert con.line(b"import sys; sys.platform") == b"import sys; sys.platform\r\n'esp32'\r\n>>> "
    out = con.line(b"import os; print(os.uname())")
    assert b"sysname='esp32'" in out and b"machine='cyphy-sim with ESP32'" in out
    out = con.line(b"print(hasattr(os, 'system'), hasattr(os, 'VfsPosix'))")
    assert b"False False" in out


def test_paste_mode(con):
    con.write(b"\x05")
    assert con.read_until(b"=== ") == b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== "
    con.write(b"def f(a):\r    return a * 3\rprint(f(14))\r\x04")
    got = con.read_until(b">>> ")
    assert got == b"def f(a):\r\n===     return a * 3\r\n=== print(f(14))\r\n=== \r\n42\r\n>>> "
    con.write(b"\x05")
    con.read_until(b"=== ")
    con.write(b"print('never')\x03")
    assert con.read_until(b">>> ") == b"print('never')\r\n>>> "


def test_compound_statement_and_auto_indent(con):
    con.write(b"for i in range(2):\r")
    assert con.read_until(b"...     ") == b"for i in range(2):\r\n...     "
    con.write(b"print(i)\r")
    assert con.read_until(b"...     ") == b"print(i)\r\n...     "
    # as on ESP32: Enter on an auto-indented blank line indents again, the next one
    # does not (two blank lines), and the third ends the block
    con.write(b"\r")
    assert con.read_until(b"...     ") == b"\r\n...     "
    con.write(b"\r")
    assert con.read_for(0.3) == b"\r\n... "
    assert con.line(b"") == b"\r\n0\r\n1\r\n>>> "


def test_raw_repl_framing_and_traceback(con):
    con.write(b"\x01")
    assert con.read_until(b">") == b"\r\nraw REPL; CTRL-B to exit\r\n>"
    con.write(b"print(1)\x04")
    assert con.read_until(b">") == b"OK1\r\n\x04\x04>"
    con.write(b"open('/no/such/file')\x04")
    assert con.read_until(b"\x04>") == (
        b'OK\x04Traceback (most recent call last):\r\n  File "<stdin>", line 1, in <module>\r\n'
        b"OSError: [Errno 2] ENOENT\r\n\x04>"
    )
    con.write(b"\x02")
    assert con.read_until(BANNER_END).startswith(b"\r\nMicroPython v")


def test_raw_paste_flow_control(con):
    con.raw()
    con.write(b"\x05A\x01")
    assert con.read_until(b"\x80\x00\x01") == b"R\x01\x80\x00\x01"
    src = b"".join(b"v%d = %d\n" % (i, i) for i in range(100)) + b"print(v99 + v1)\n"
    assert len(src) > 3 * 128
    window = 128
    credit = 2 * window  # the window size means one window free, the \x01 one more
    sent = 0
    while sent < len(src):
        while credit == 0:
            b = con.s.read(1)
            if b == b"\x01":
                credit += window
            else:
                assert b == b"", f"unexpected {b!r} during raw-paste"
        n = min(credit, len(src) - sent)
        con.write(src[sent : sent + n])
        sent += n
        credit -= n
    con.write(b"\x04")
    rest = con.read_until(b"\x04\x04>")
    assert rest.replace(b"\x01", b"") == b"\x04100\r\n\x04\x04>"


def test_raw_paste_refuses_unknown_command(con):
    con.raw()
    con.write(b"\x05B\x01")
    assert con.read_until(b"R\x00") == b"R\x00"


def test_ctrl_c_interrupts_running_code_without_losing_input(con):
    con.write(b"while True: pass\r\r")
    con.read_until(b"\r\n...")
    con.read_for(0.2)
    # typed while the loop runs: must survive the interrupt, as in ESP32's ring buffer
    con.write(b"x = 1234")
    time.sleep(0.2)
    con.write(b"\x03")
    got = con.read_until(b"KeyboardInterrupt: \r\n>>> ")
    assert b"Traceback (most recent call last):" in got
    assert con.read_until(b"x = 1234") == b"x = 1234"
    assert con.line(b"") == b"\r\n>>> "
    assert con.line(b"print(x + 1)") == b"print(x + 1)\r\n1235\r\n>>> "


def test_ctrl_c_many_cycles_lose_nothing(con):
    """Interrupt 20 busy loops with ordinary bytes typed around each Ctrl-C."""
    con.raw()
    total = 0
    for i in range(20):
        con.write(b"n = %d\nwhile True: n += 1\x04" % i)
        con.read_until(b"OK")
        con.write(b"\x03")
        con.read_until(b"KeyboardInterrupt: \r\n\x04>")
        out, err = con.raw_exec(b"print(%d)" % i)
        assert (out, err) == (b"%d\r\n" % i, b"")
        total += 1
    assert total == 20


def test_ctrl_c_in_raw_repl(con):
    con.raw()
    con.write(b"import time\nwhile True: time.sleep_ms(1)\x04")
    con.read_until(b"OK")
    time.sleep(0.2)
    con.write(b"\x03")
    got = con.read_until(b"\x04>")
    assert got.startswith(b"\x04Traceback (most recent call last):\r\n")
    assert got.endswith(b"KeyboardInterrupt: \r\n\x04>")


def test_soft_reboot_fresh_globals_boot_and_main(con):
    put_file(con, "/boot.py", "print('BOOT')\n")
    put_file(con, "/main.py", "print('MAIN')\n")
    con.line(b"secret = 1")
    con.write(b"\x04")
    got = con.read_until(BANNER_END)
    assert got.startswith(b"\r\nMPY: soft reboot\r\nBOOT\r\nMAIN\r\nMicroPython v")
    out = con.line(b"secret")
    assert b"NameError: name 'secret' isn't defined" in out
    # from the raw REPL a soft reboot runs boot.py but not main.py
    con.raw()
    con.write(b"\x04")
    assert con.read_until(b"raw REPL; CTRL-B to exit\r\n>") == (
        b"OK\r\nMPY: soft reboot\r\nBOOT\r\nraw REPL; CTRL-B to exit\r\n>"
    )


def test_sys_exit_and_soft_reset_reboot(con):
    con.write(b"import sys; sys.exit()\r")
    assert b"MPY: soft reboot\r\n" in con.read_until(BANNER_END)
    con.write(b"import machine; machine.soft_reset()\r")
    assert b"MPY: soft reboot\r\n" in con.read_until(BANNER_END)


def test_machine_reset_is_a_hard_reset(con):
    put_file(con, "/main.py", "print('MAIN')\n")
    con.write(b"import machine; machine.reset()\r")
    got = con.read_until(BANNER_END)
    assert b"rst:0xc (SW_CPU_RESET)" in got
    assert b"MAIN\r\n" in got
    assert b"reset_cause() 2" in con.line(b"import machine; print('reset_cause()', machine.reset_cause())")


def test_exception_in_main_leaves_repl_usable(con):
    put_file(con, "/main.py", "x = 1\nraise ValueError('boom')\n")
    con.write(b"\x04")
    got = con.read_until(BANNER_END)
    assert b'Traceback (most recent call last):\r\n  File "main.py", line 2, in <module>\r\nValueError: boom\r\n' in got
    assert con.line(b"print(x + 1)") == b"print(x + 1)\r\n2\r\n>>> "


def test_ctrl_c_stops_endless_main(con):
    put_file(con, "/main.py", "while True: pass\n")
    con.write(b"\x04")
    con.read_until(b"MPY: soft reboot\r\n")
    time.sleep(0.3)
    assert con.read_for(0.2) == b""  # main.py is running: no prompt
    con.write(b"\x03")
    got = con.read_until(BANNER_END)
    assert b'File "main.py", line 1, in <module>\r\nKeyboardInterrupt: \r\n' in got
    assert con.line(b"1+1") == b"1+1\r\n2\r\n>>> "


def test_unique_id_is_stable_across_resets(con):
    a = con.line(b"import machine; machine.unique_id()")
    con.write(b"\x04")
    con.read_until(BANNER_END)
    b = con.line(b"import machine; machine.unique_id()")
    assert a == b
    assert len(eval(a.split(b"\r\n")[1])) == 6  # a bytes literal: the 6-byte MAC


def test_line_editing_and_history(con):
    # "print(12)", left twice (before '2'), insert '3', backspace twice, insert '4'
    con.write(b"print(12)\x1b[D\x1b[D3\x08\x084\r")
    echo = con.read_until(b">>> ")
    # redraws as MicroPython's readline does: back, erase, rest of line, back
    assert echo == b"print(12)\x08\x0832)\x08\x08\x08\x1b[K2)\x08\x08\x08\x1b[K2)\x08\x0842)\x08\x08\r\n42\r\n>>> "
    con.write(b"\x1b[A\r")  # up arrow recalls the last line
    assert con.read_until(b">>> ") == b"print(42)\r\n42\r\n>>> "


def test_ctrl_c_racing_the_end_of_execution_loses_nothing(con):
    """A Ctrl-C that lands just as code finishes must not eat the next command's bytes."""
    con.raw()
    for i in range(150):
        # code of varying length, Ctrl-C as soon as it starts: the interrupt lands while
        # it runs (KeyboardInterrupt) or just after it ended (dropped, as on ESP32)
        con.write(b"x = %d\nfor _ in range(%d): pass\x04" % (i, (i * 37) % 3000))
        con.read_until(b"OK")
        con.write(b"\x03")
        con.read_until(b"\x04>")
        out, err = con.raw_exec(b"print('ok%d')" % i)
        assert (out, err) == (b"ok%d\r\n" % i, b""), err.decode()


def test_deepsleep_wakes_with_deepsleep_reset(con):
    con.write(b"import machine; machine.deepsleep(10)\r")
    got = con.read_until(BANNER_END)
    assert b"rst:0x5 (DEEPSLEEP_RESET)" in got
    assert b"cause 4" in con.line(b"import machine; print('cause', machine.reset_cause())")
