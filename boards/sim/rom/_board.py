# What user code sees of the sim board: the modules an ESP32 build of MicroPython has
# (sys, os, vfs, micropython, machine, network), backed by the Unix port but without its
# host-only parts (os.system, os.getenv, vfs.VfsPosix), with the console going through
# the supervisor link, and with ESP32's identity.
import sys
import os as _os
import vfs as _vfs
import io
import micropython as _mp
import time as _time
from collections import namedtuple
import _clock
import _hw
import _network
import _esp32  # before the host filesystem goes: ROM modules load only then

BOARD_NAME = "cyphy-sim"
MCU_NAME = _hw.UNAME  # the chip's name in the banner and os.uname() (boards/esp32/pins.py)
MACHINE = BOARD_NAME + " with " + MCU_NAME

_real_sys = sys
_v = sys.implementation.version
RELEASE = "%d.%d.%d" % (_v[0], _v[1], _v[2]) + ("-" + _v[3] if len(_v) > 3 and _v[3] else "")
# sys.version looks like "3.4.0; MicroPython 9458e3a23f on 2026-07-05"
BUILD_DATE = sys.version.rsplit(" on ", 1)[-1]
BANNER = "MicroPython v%s on %s; %s" % (RELEASE, BUILD_DATE, MACHINE)


class Module:
    """A stand-in module: `import name` finds it in sys.modules."""

    def __init__(self, name, **attrs):
        self.__name__ = name
        for k, v in attrs.items():
            setattr(self, k, v)

    def __repr__(self):
        return "<module '%s'>" % self.__name__


def _copy(src, skip=()):
    return {k: getattr(src, k) for k in dir(src) if not k.startswith("__") and k not in skip}


# ---------------------------------------------------------------- console streams
# sys.stdin/stdout/stderr as on a board: MicroPython's shared/runtime/sys_stdio_mphal.c,
# used by ports/esp32 (MICROPY_PY_SYS_STDFILES and MICROPY_PY_SYS_STDIO_BUFFER are on at
# its ROM level, py/mpconfig.h). One type, TextIOWrapper, printing as <io.TextIOWrapper
# FD>; text reads turn '\r' into '\n' (stdio_read); writes return the byte count;
# reading stdout or writing stdin is OSError EPERM. All three share ONE .buffer object,
# a FileIO printing as <io.FileIO 0>, raw in both directions (stdin.buffer.write goes to
# the console). The methods are the board's: buffer, read, readinto, readline, readlines,
# write, close (returns the stream), __enter__/__exit__, iteration by lines; no flush.
# (ioctl is here too: io.IOBase needs it for select.poll and print.)
_EPERM = 1
_EINVAL = 22
_MP_STREAM_POLL = 3
_MP_STREAM_CLOSE = 4


def _read_all_forever(stream):
    # stream_readall (py/stream.c) stops only at EOF, and the console never has one:
    # on a board sys.stdin.read() without a size never returns.
    acc = bytearray()
    while True:
        acc.extend(stream._link.read(256))


class _Stdio(io.IOBase):
    """The methods both stdio types share (stdio_locals_dict)."""

    def __init__(self, link, fd):
        self._link = link
        self._fd = fd

    def __repr__(self):
        return "<io.%s %d>" % (type(self).__name__, self._fd)

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:  # mp_hal_stdio_poll: input waiting; always writable
            return (arg & 1 if self._link.available() else 0) | (arg & 4)
        if req == _MP_STREAM_CLOSE:
            return 0
        return -_EINVAL

    def close(self):
        return self  # mp_identity_obj

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readlines(self):
        lines = []
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)

    @staticmethod
    def _span(buf, a, b):
        """stream.write(buf[, max_len]) / (buf, off, max_len), as py/stream.c takes them."""
        if a is None:
            return buf
        if b is None:
            return memoryview(buf)[: a]
        n = len(buf)
        off = a if a < n else n
        return memoryview(buf)[off : off + b]


class FileIO(_Stdio):
    """sys.stdin.buffer (= sys.stdout.buffer = sys.stderr.buffer): raw console bytes."""

    def __init__(self, link):
        super().__init__(link, 0)  # sys_stdio_mphal.c: "fd = 0, // fd unused"
        self.buffer = self

    def write(self, buf, a=None, b=None):
        return self._link.write_raw(buf if a is None else self._span(buf, a, b))

    def readinto(self, buf, a=None):
        n = len(buf) if a is None or a > len(buf) else a
        return self._link.readinto(buf, n)

    def read(self, n=-1):
        if n is None or n < 0:
            _read_all_forever(self)
        b = bytearray(n)
        self._link.readinto(b, n)
        return bytes(b)

    def readline(self, size=-1):
        acc = bytearray()
        while size < 0 or len(acc) < size:
            c = self._link.read_byte()
            acc.append(c)
            if c == 10:
                break
        return bytes(acc)


class TextIOWrapper(_Stdio):
    """sys.stdin (fd 0), sys.stdout (1), sys.stderr (2)."""

    def __init__(self, link, fd, buffer):
        super().__init__(link, fd)
        self.buffer = buffer

    def write(self, buf, a=None, b=None):
        if self._fd == 0:
            raise OSError(_EPERM)
        # print() arrives here with a bytearray on the C stack (py/modio.c iobase_read_write):
        # the common path (no NUL, <= one frame) allocates nothing, as on a board.
        return self._link.write_text(buf if a is None else self._span(buf, a, b))

    def _text_bytes(self, buf, n):
        if self._fd != 0:
            raise OSError(_EPERM)
        got = self._link.readinto(buf, n)
        for i in range(got):  # stdio_read: a typed Enter reads as '\n'
            if buf[i] == 13:
                buf[i] = 10
        return got

    def readinto(self, buf, a=None):
        return self._text_bytes(buf, len(buf) if a is None or a > len(buf) else a)

    def read(self, n=-1):
        if self._fd != 0:
            raise OSError(_EPERM)
        if n is None or n < 0:
            _read_all_forever(self)
        # n characters (UTF-8), as stream_read_generic counts them for a text stream
        acc = bytearray()
        chars = 0
        one = bytearray(1)
        need = 0
        while chars < n or need:
            self._text_bytes(one, 1)
            c = one[0]
            acc.append(c)
            if need:
                need -= 1
                if not need:
                    chars += 1
            elif c < 0x80:
                chars += 1
            else:
                need = 1 if c < 0xE0 else 2 if c < 0xF0 else 3
        return acc.decode()

    def readline(self, size=-1):
        if self._fd != 0:
            raise OSError(_EPERM)
        acc = bytearray()
        one = bytearray(1)
        while size < 0 or len(acc) < size:
            self._text_bytes(one, 1)
            acc.append(one[0])
            if one[0] == 10:
                break
        return acc.decode()


# ---------------------------------------------------------------- board state
# ESP-IDF's task watchdog text when machine.WDT bites (see the supervisor's WDT_PANIC)
_WDT_PANIC = (b"E (0) task_wdt: Task watchdog got triggered. The following tasks/users did not "
              b"reset the watchdog in time:\r\nE (0) task_wdt:  - mpy_machine_wdt\r\n"
              b"E (0) task_wdt: Aborting.\r\n\r\nRebooting...\r\n")


class Watchdog:
    """machine.WDT: once started it cannot be stopped. The node checks it whenever it
    waits; in real time the supervisor also checks it (fed through rate-limited 'W'
    frames), so a loop that hangs without ever waiting still gets reset."""

    _FEED = b"\x00W\x00\x00"

    def __init__(self, board):
        self.board = board
        self.clock = board.clock
        self.real = not board.clock.virtual  # only real time needs the supervisor's check
        self.timeout_us = 0
        self.quarter_us = 0
        self.fed = 0
        self.told = 0  # when the supervisor last heard a feed

    def arm_or_feed(self, timeout_ms):
        if timeout_ms:
            self.arm(timeout_ms)
        else:
            self.feed()

    def arm(self, timeout_ms):
        now = self.clock.ticks_us()
        self.fed = now
        if self.timeout_us == 0:
            self.clock.watchdog = self
        self.timeout_us = timeout_ms * 1000
        self.quarter_us = self.timeout_us >> 2
        if self.real:
            self.board.link.frame(87, bytes((timeout_ms & 255, timeout_ms >> 8 & 255, timeout_ms >> 16 & 255, 0)))
            self.told = now

    def resume(self, timeout_ms, left_ms):
        """After a soft reset: the watchdog started before it, with left_ms to go."""
        self.timeout_us = timeout_ms * 1000
        self.quarter_us = self.timeout_us >> 2
        now = self.clock.ticks_us()
        self.fed = self.clock.ticks_add(now, left_ms * 1000 - self.timeout_us)
        self.told = now
        self.clock.watchdog = self

    def feed(self):
        # Small on purpose: a bigger frame would be heap-allocated on every feed.
        now = self.clock.ticks_us()
        self.fed = now
        if self.real and self.clock.ticks_diff(now, self.told) > self.quarter_us:
            self._tell(now)

    def _tell(self, now):
        self.board.link._out.write(Watchdog._FEED)  # preallocated bytes: no allocation
        self.told = now

    def check(self):
        clock = self.board.clock
        if self.timeout_us and clock.ticks_diff(clock.ticks_us(), self.fed) > self.timeout_us:
            self.board.link.write_raw(_WDT_PANIC)
            self.board.hard_reset(b"w")


class Board:
    def __init__(self, link, uid, reset_cause, node_name, bench_spec=None, ip="127.0.0.1"):
        self.link = link
        self.clock = link.clock
        self.clock.n_timers = _hw.C["timers"]  # Timer(0..n-1): 4 on ESP32/S3, 2 on C3
        self.bench = _hw.Bench(bench_spec, self.clock)
        if self.bench.plant is not None:
            self.clock.hardware = self.bench
            import _gear  # the supervisor's control socket: only a bench needs it

            gear = _gear.Gear(link, self.bench)
            link.on_request = gear.answer
            if not self.clock.virtual:
                self.clock.waiter = gear.wait_us  # real-time sleeps serve those requests too
        self.watchdog = Watchdog(self)
        self.uid = uid
        self.reset_cause = reset_cause
        self.node_name = node_name
        self.ip = ip  # the node's own loopback address: its "Wi-Fi" IP (node.json)
        buf = FileIO(link)  # the one .buffer of all three
        self.stdin = TextIOWrapper(link, 0, buf)
        self.stdout = TextIOWrapper(link, 1, buf)
        self.stderr = TextIOWrapper(link, 2, buf)
        self.mode = "friendly"  # REPL mode, survives soft reboots via the supervisor

    def hard_reset(self, kind=b"h"):
        """machine.reset() (b'h'), a deep-sleep wake-up (b'd') or a watchdog reset (b'w'):
        never returns; the supervisor restarts the whole process."""
        self.link.reboot(kind)
        while True:
            try:
                _time.sleep(1)
            except BaseException:  # noqa: B036 - nothing may run after a reset
                pass


class SoftReset(Exception):
    """Raised by machine.soft_reset(); the REPL turns it into a soft reboot."""


def _make_sys(board):
    impl = namedtuple("implementation", ("name", "version", "_machine", "_mpy", "_build"))(
        "micropython",
        _real_sys.implementation.version,
        MACHINE,
        getattr(_real_sys.implementation, "_mpy", 0),
        "ESP32_GENERIC",
    )

    def print_exception(exc, file=None):
        _real_sys.print_exception(exc, file or board.stdout)

    # exc_info: ESP32 builds have none (MICROPY_PY_SYS_EXC_INFO defaults to 0 in
    # py/mpconfig.h and ports/esp32/mpconfigport.h does not enable it); the Unix port has it.
    attrs = _copy(_real_sys, skip=("stdin", "stdout", "stderr", "atexit", "executable", "exc_info"))
    attrs.update(
        stdin=board.stdin,
        stdout=board.stdout,
        stderr=board.stderr,
        platform="esp32",
        implementation=impl,
        argv=[],
        executable="",
        print_exception=print_exception,
    )
    return Module("sys", **attrs)


def _make_os():
    uname_t = namedtuple("uname_result", ("sysname", "nodename", "release", "version", "machine"))
    uname = uname_t("esp32", "esp32", RELEASE, "v%s on %s" % (RELEASE, BUILD_DATE), MACHINE)
    host_only = ("system", "getenv", "putenv", "unsetenv", "VfsPosix")
    attrs = _copy(_os, skip=host_only)
    attrs.update(uname=lambda: uname, sync=lambda: None, dupterm=lambda *a: None)
    return Module("os", **attrs)


def _make_vfs():
    return Module("vfs", **_copy(_vfs, skip=("VfsPosix",)))


def _make_select(board):
    # The Unix port's select.poll() on a Python stream (our console) spends about a
    # millisecond per call even with input waiting, where ESP32's is immediate. When only
    # console streams are registered, answer from the link's queue instead; anything else
    # registered (a socket) goes to the real poll, as before.
    import select as _sel

    link = board.link
    IN, OUT = _sel.POLLIN, _sel.POLLOUT

    class Poll:
        def __init__(self):
            self._real = _sel.poll()
            self._con = []               # [stream, mask] of console streams
            self._others = 0

        def register(self, obj, mask=IN | OUT):
            self._real.register(obj, mask)
            if isinstance(obj, _Stdio):
                self.unregister_con(obj)
                self._con.append([obj, mask])
            else:
                self._others += 1

        def modify(self, obj, mask):
            self._real.modify(obj, mask)
            for e in self._con:
                if e[0] is obj:
                    e[1] = mask

        def unregister_con(self, obj):
            for i in range(len(self._con)):
                if self._con[i][0] is obj:
                    self._con.pop(i)
                    return True
            return False

        def unregister(self, obj):
            self._real.unregister(obj)
            if not self.unregister_con(obj):
                self._others -= 1

        def _ready(self):
            r = []
            for obj, mask in self._con:
                # any stdio object: readable when console input waits, always writable
                # (mp_hal_stdio_poll in ports/esp32/mphalport.c ignores which one it is)
                ev = mask & OUT
                if mask & IN and link.available():
                    ev |= IN
                if ev:
                    r.append((obj, ev))
            return r

        def poll(self, timeout=-1):
            if self._others or not self._con:
                return self._real.poll(timeout)
            r = self._ready()
            if r or timeout == 0:
                return r
            link.wait_input(-1 if timeout is None or timeout < 0 else timeout)
            return self._ready()

        def ipoll(self, timeout=-1, flags=0):
            if self._others or not self._con:
                # sockets only: the port's own ipoll, which allocates nothing (as ESP32's)
                return self._real.ipoll(timeout, flags)
            return iter(self.poll(timeout))

    attrs = _copy(_sel)
    attrs["poll"] = Poll
    return Module("select", **attrs)


def _make_time(board):
    clock = board.clock
    attrs = _copy(_time)
    attrs.update(
        ticks_ms=clock.ticks_ms,
        ticks_us=clock.ticks_us,
        ticks_cpu=clock.ticks_cpu,
        ticks_add=clock.ticks_add,
        ticks_diff=clock.ticks_diff,
        sleep_us=clock.sleep_us,
        sleep_ms=lambda ms: clock.sleep_us(ms * 1000),
        sleep=lambda s: clock.sleep_us(int(s * 1_000_000)),
    )
    return Module("time", **attrs)


def _make_micropython(board):
    attrs = _copy(_mp)

    def kbd_intr(c):
        # The Unix port's kbd_intr(-1) would restore SIGINT's default action (killing the
        # node); here the interrupt character lives in the supervisor, as in ESP32's UART ISR.
        board.link.set_interrupt_char(c)

    attrs["kbd_intr"] = kbd_intr
    # ESP32's queue: 8 entries shared with the timers' fires (boards/sim/rom/_clock.py)
    attrs["schedule"] = board.clock.schedule
    board.clock.report_scheduled = lambda e: _real_sys.print_exception(e, board.stdout)
    return Module("micropython", **attrs)


def _make_machine(board):
    def reset():
        board.hard_reset()

    def soft_reset():
        raise SoftReset()

    def unique_id():
        return board.uid

    def reset_cause():
        return board.reset_cause

    freq_hz = [160_000_000]

    def freq(hz=None):
        if hz is None:
            return freq_hz[0]
        if hz not in (20_000_000, 40_000_000, 80_000_000, 160_000_000, 240_000_000):
            raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
        freq_hz[0] = hz

    clock = board.clock

    def idle():
        # wait for "an interrupt": the next timer, or at most a millisecond
        due = clock.due_in_us()
        clock.sleep_us(1000 if due < 0 or due > 1000 else due)

    def report(exc):
        board.stdout.write("Unhandled exception in timer callback\n")
        _real_sys.print_exception(exc, board.stdout)

    class Timer(_clock.Timer):
        def __init__(self, id=0, **kw):
            super().__init__(clock, report, id, **kw)

    Pin, ADC, PWM, DAC, WDT = _hw.make_machine_classes(board.bench, board.watchdog.arm_or_feed)
    # buses and counters where the bench wires them (their models load only then)
    mods = board.bench.mods
    I2C = mods["_i2c"].make_class(board.bench, clock) if "_i2c" in mods else None
    SPI = mods["_spi"].make_class(board.bench, clock) if "_spi" in mods else None

    def uart_pin(n, output):
        Pin(n, Pin.OUT if output else Pin.IN)  # the chip's checks: invalid, input-only

    UART = (mods["_uart"].make_class(board.bench, clock, _hw.MCU, uart_pin)
            if "_uart" in mods else None)
    pcnt = mods["_pulse"].make_classes(board.bench, _hw.C) if "_pulse" in mods else None

    def deepsleep(ms=0):
        # A deep sleep ends in a reset on ESP32; the sim wakes at once.
        board.hard_reset(b"d")

    import machine as _real_machine

    attrs = dict(
        mem8=_real_machine.mem8,
        mem16=_real_machine.mem16,
        mem32=_real_machine.mem32,
        reset=reset,
        soft_reset=soft_reset,
        unique_id=unique_id,
        reset_cause=reset_cause,
        freq=freq,
        idle=idle,
        deepsleep=deepsleep,
        lightsleep=lambda ms=0: clock.sleep_us(ms * 1000),
        Timer=Timer,
        Pin=Pin,
        ADC=ADC,
        PWM=PWM,
        DAC=DAC,
        WDT=WDT,
        disable_irq=lambda: 0,
        enable_irq=lambda state=0: None,
        PWRON_RESET=1,
        HARD_RESET=2,
        WDT_RESET=3,
        DEEPSLEEP_RESET=4,
        SOFT_RESET=5,
    )
    for k, v in (("I2C", I2C), ("SoftI2C", I2C), ("SPI", SPI), ("UART", UART)):
        if v is not None:
            attrs[k] = v
    if pcnt is not None:  # PCNT units: ESP32 and S3, not the C3
        attrs["Counter"], attrs["Encoder"] = pcnt
    if not _hw.C["dac"]:
        del attrs["DAC"]  # S3 and C3 have no DAC: their machine module has no DAC class
    return Module("machine", **attrs)


class _NoArg:
    """print()'s marker for 'no argument here'."""


_NO = _NoArg()
_out = None  # sys.stdout, set by install()
_print = print  # the Unix port's print


# print() must reach the console through the link, never straight to fd 1, and, as on a
# board, allocate nothing for str and small-int arguments (py/modbuiltins.c
# mp_builtin_print writes each piece to the stream; py/objint.c mp_obj_int_print formats in
# a stack buffer). So: the Unix port's own print with file= our stdout, which hands our
# write() a bytearray on the C stack (py/modio.c iobase_read_write). A *args tuple would be
# allocated, so up to four positional arguments come as plain parameters (*more is then
# the empty tuple, a constant); and this is a module-level function, not a closure (a
# closure's call copies its arguments to the heap past five, py/objclosure.c).
def _print_(a=_NO, b=_NO, c=_NO, d=_NO, *more, sep=" ", end="\n", file=None):
    f = _out if file is None else file
    if a is _NO:
        _print(sep=sep, end=end, file=f)
    elif b is _NO:
        _print(a, sep=sep, end=end, file=f)
    elif c is _NO:
        _print(a, b, sep=sep, end=end, file=f)
    elif d is _NO:
        _print(a, b, c, sep=sep, end=end, file=f)
    else:
        _print(a, b, c, d, *more, sep=sep, end=end, file=f)


def install(board):
    """Replace the host-facing modules with the board's, for every later import."""
    global _out, _print
    import builtins

    mods = _real_sys.modules
    mods["sys"] = _make_sys(board)
    mods["os"] = _make_os()
    mods["uos"] = mods["os"]
    mods["vfs"] = _make_vfs()
    mods["micropython"] = _make_micropython(board)
    mods["machine"] = _make_machine(board)
    mods["umachine"] = mods["machine"]
    mods["time"] = _make_time(board)
    mods["utime"] = mods["time"]
    mods["network"] = _network.make(board, Module)
    mods["esp32"] = _esp32.make(board, Module)  # flash image, partition table, NVS
    mods["socket"] = _network.make_socket(Module)  # AF_INET only while the Wi-Fi carries
    mods["select"] = _make_select(board)
    if "_onewire" in board.bench.mods:  # 1-Wire buses, where the bench has one
        mods["onewire"] = board.bench.mods["_onewire"].make(board.bench, board.clock, Module, None)
    mods["uselect"] = mods["select"]

    out = board.stdout
    _out = out
    _print = builtins.print

    def input_(prompt=""):
        out.write(prompt)
        acc = bytearray()
        while True:
            c = board.link.read_byte()
            if c == 13:
                out.write("\n")
                return acc.decode()
            if c == 3:
                raise KeyboardInterrupt
            if c == 4 and not acc:
                raise EOFError
            if c in (8, 127):
                if acc:
                    acc.pop()
                    board.link.write_raw(b"\x08 \x08")
                continue
            if c >= 32:
                acc.append(c)
                board.link.write_raw(bytes((c,)))

    builtins.print = _print_
    builtins.input = input_
