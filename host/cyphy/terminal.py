"""`cyphy repl`: a terminal on a node's console that never resets it (no DTR/RTS toggling,
no Ctrl-C or Ctrl-D sent on its own), so the loops keep running. Ctrl-] leaves."""

from __future__ import annotations

import os
import select
import sys

import serial

EXIT_KEY = 0x1D  # Ctrl-]


def run(port: str, baud: int = 115200, opened: "callable | None" = None) -> None:
    """The terminal until Ctrl-] or the end of stdin; opened() is called once the port is
    open (a port that cannot be opened raises LinkError first)."""
    try:
        # dsrdtr/rtscts off and DTR/RTS left alone: on ESP32 boards they drive EN and IO0
        s = serial.Serial()
        s.port, s.baudrate, s.timeout = port, baud, 0
        s.dtr = False
        s.rts = False
        s.exclusive = True
        s.open()
    except serial.SerialException as e:
        from .links import LinkError, _serial_hint

        raise LinkError(_serial_hint(port, e)) from None
    if opened is not None:
        opened()
    fd_in = sys.stdin.fileno()
    old = None
    if os.isatty(fd_in):
        import termios
        import tty

        old = termios.tcgetattr(fd_in)
        tty.setraw(fd_in)
    try:
        _pump(s, fd_in)
    finally:
        if old is not None:
            import termios

            termios.tcsetattr(fd_in, termios.TCSADRAIN, old)
        s.close()


def _pump(s: serial.Serial, fd_in: int) -> None:
    out = sys.stdout.buffer
    while True:
        r, _, _ = select.select([fd_in, s.fileno()], [], [], 0.5)
        if s.fileno() in r:
            data = s.read(s.in_waiting or 1)
            if data:
                out.write(data)
                out.flush()
        if fd_in in r:
            data = os.read(fd_in, 256)
            if not data:
                return  # stdin closed
            i = data.find(bytes((EXIT_KEY,)))
            if i >= 0:
                s.write(data[:i])
                return
            s.write(data)
