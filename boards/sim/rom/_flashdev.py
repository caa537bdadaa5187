# The sim board's SPI flash: the node's flash image file, and one partition of it exposed
# with MicroPython's extended block-device protocol (as esp32.Partition is on a real
# board; _esp32.py builds esp32.Partition on the same file handle).
#
# Timing. On ESP32 the flash shares the SPI0/1 bus with the instruction and data caches,
# so during an erase or a program the caches are disabled, the other CPU is blocked and
# non-IRAM interrupts are held off until the flash is done (ESP-IDF, "Concurrency
# Constraints for flash on SPI1", docs/en/api-reference/storage/spi_flash_concurrency.rst).
# MicroPython's code runs from flash, so the whole node stops. The sim does the same:
# every erase and program stalls the node process for the chip's time, without running
# timer callbacks or stepping anything (stall()). Figures, Winbond W25Q32 (the chip the
# sim's ROM loader reports, JEDEC EF 40 16), typical values from its datasheet (W25Q32FV
# rev H / W25Q32JV rev F, "AC Electrical Characteristics"):
#   sector erase 4 KB       tSE  45 ms typ (400 ms max)
#   byte program, first     tBP1 30 us typ; each further byte tBP2 2.5 us typ
#   page program 256 B      tPP  0.7 ms typ (3 ms max) on the FV; 0.4 ms on the JV
# ESP-IDF programs through the SPI1 host at most 64 bytes per command, never across a
# 256-byte page (SPI_FLASH_HAL_MAX_WRITE_BYTES = 64 for ESP32's SPI1; esp_flash_write
# splits on page boundaries), so a write costs, per command of n bytes,
# tBP1 + (n - 1) * tBP2 (64 bytes: 0.19 ms; a 4 KB block: 64 commands, 12 ms).
# ESP-IDF's own generic-chip timeout for a sector erase is 600 ms ("according to
# GD25Q127(125C) + 100ms", spi_flash_chip_generic.c): the maximum is far above typical.
# The sim uses the typical figures; STALL = False (test equipment: flash.stall) turns it off.
from micropython import const
import time as _t

_BLOCK = const(4096)
_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_COUNT = const(4)
_IOCTL_SIZE = const(5)
_IOCTL_ERASE = const(6)

ERASE_US = const(45_000)  # tSE, 4 KB sector, typical
PROG_FIRST_US = 30  # tBP1 (float-free: tenths below)
PROG_NEXT_TENTHS_US = 25  # tBP2 = 2.5 us
_CMD_MAX = const(64)  # bytes per program command (ESP32 SPI1 host)
_PAGE = const(256)

STALL = True  # model the erase/program time (on by default; off: test equipment)
CLOCK = None  # the board's clock (_clock.Clock), set by the ROM: virtual time moves too
IMAGE = None  # the image's file handle, shared with esp32.Partition
_stats = [0, 0, 0]  # erases, program commands, microseconds stalled


def stats():
    """(sector erases, program commands, microseconds the node stalled) since boot."""
    return tuple(_stats)


def program_us(addr, n):
    """Modelled time to program n bytes at flash address addr (ESP-IDF's commands)."""
    us = 0
    cmds = 0
    while n > 0:
        k = _PAGE - addr % _PAGE
        if k > _CMD_MAX:
            k = _CMD_MAX
        if k > n:
            k = n
        us += PROG_FIRST_US + (k - 1) * PROG_NEXT_TENTHS_US // 10
        cmds += 1
        addr += k
        n -= k
    _stats[1] += cmds
    return us


def stall(us):
    """Stop the whole node for us microseconds: no timer callbacks, nothing else runs
    (ESP32: caches disabled, the other core blocked). Virtual time jumps by us."""
    if not STALL or us <= 0:
        return
    _stats[2] += us
    clk = CLOCK
    if clk is not None and clk.virtual:
        clk._vnow += us
        return
    _t.sleep_us(us)  # the Unix port's own sleep: no servicing of the board's timers


def erase(addr):
    """Erase the 4 KB sector at addr (absolute, sector-aligned) of the image."""
    f = IMAGE
    f.seek(addr)
    f.write(_ERASED)
    _stats[0] += 1
    stall(ERASE_US)


def program(addr, buf):
    """Program buf at addr (absolute). NOR flash can only clear bits: a program ANDs with
    what is there, as the chip does (a write over unerased data corrupts it, as on ESP32)."""
    f = IMAGE
    n = len(buf)
    f.seek(addr)
    old = f.read(n)
    if n > _BLOCK or old != _ERASED[:n]:
        mv = memoryview(buf)
        cur = bytearray(old)
        for i in range(n):
            cur[i] &= mv[i]
        data = cur
    else:
        data = buf
    f.seek(addr)
    f.write(data)
    stall(program_us(addr, n))


_ERASED = b"\xff" * _BLOCK


class FlashPartition:
    def __init__(self, path, offset, size):
        global IMAGE
        # Opened while the host filesystem is still mounted; the handle outlives that.
        if IMAGE is None:
            IMAGE = open(path, "r+b")
        self._f = IMAGE
        self._base = offset
        self._count = size // _BLOCK
        self._erased = _ERASED

    def _addr(self, block, offset, n=0):
        if not 0 <= block < self._count or block * _BLOCK + offset + n > self._count * _BLOCK:
            raise OSError(22)  # EINVAL, as the ESP32 partition driver reports
        return self._base + block * _BLOCK + offset

    def readblocks(self, block, buf, offset=0):
        self._f.seek(self._addr(block, offset, len(buf)))
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # simple protocol: whole blocks, erased first
            for i in range(len(buf) // _BLOCK):
                self.ioctl(_IOCTL_ERASE, block + i)
            offset = 0
        program(self._addr(block, offset, len(buf)), buf)

    def ioctl(self, op, arg):
        if op == _IOCTL_COUNT:
            return self._count
        if op == _IOCTL_SIZE:
            return _BLOCK
        if op == _IOCTL_ERASE:
            erase(self._addr(arg, 0))
            return 0
        if op in (_IOCTL_INIT, _IOCTL_DEINIT, _IOCTL_SYNC):
            return 0
        return None

    def is_blank(self):
        """True when the first two blocks are erased (never formatted)."""
        buf = bytearray(_BLOCK)
        for b in (0, 1):
            self.readblocks(b, buf)
            if buf != self._erased:
                return False
        return True
