# The sim board's SPI flash: one partition of the node's flash image file, exposed with
# MicroPython's extended block-device protocol (as esp32.Partition is on a real board).
from micropython import const

_BLOCK = const(4096)
_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_COUNT = const(4)
_IOCTL_SIZE = const(5)
_IOCTL_ERASE = const(6)


class FlashPartition:
    def __init__(self, path, offset, size):
        # Opened while the host filesystem is still mounted; the handle outlives that.
        self._f = open(path, "r+b")
        self._base = offset
        self._count = size // _BLOCK
        self._erased = b"\xff" * _BLOCK

    def _seek(self, block, offset):
        if not 0 <= block < self._count:
            raise OSError(22)  # EINVAL, as the ESP32 partition driver reports
        self._f.seek(self._base + block * _BLOCK + offset)

    def readblocks(self, block, buf, offset=0):
        self._seek(block, offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # simple protocol: whole blocks, erased first
            for i in range(len(buf) // _BLOCK):
                self.ioctl(_IOCTL_ERASE, block + i)
            offset = 0
        self._seek(block, offset)
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == _IOCTL_COUNT:
            return self._count
        if op == _IOCTL_SIZE:
            return _BLOCK
        if op == _IOCTL_ERASE:
            self._seek(arg, 0)
            self._f.write(self._erased)
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
