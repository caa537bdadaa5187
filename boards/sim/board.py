# The sim board's HAL: a sim node is an ESP32 DevKit as far as user code can tell (its
# ROM's machine and network modules follow ESP32's API, boards/sim/rom/_hw.py and
# _network.py), so the HAL is the ESP32 one with the DevKit pin map of the node's chip
# (`cyphy sim start --chip esp32|esp32s3|esp32c3`: DevKitC, S3-DevKitC-1, C3-DevKitM-1).
# What differs:
# - Wi-Fi is ESP32's code path against the ROM's network module: one access point that
#   any SSID joins at once; the node's address is its own loopback IP from node.json
#   (127.1.x.y). The ADC2 rule stays as on an ESP32.
# - UDP (udp()): every node has its own loopback address, but broadcasts to
#   127.255.255.255 reach only sockets bound to that address (or to the wildcard, which
#   would also catch unicasts meant for other nodes). So each endpoint has two sockets:
#   one bound to (node ip, port) that sends (replies come from the node's own address)
#   and receives unicasts, and one bound to ("127.255.255.255", port) with SO_REUSEADDR
#   that receives broadcasts (every node binds one; Linux gives each a copy).
# - virtual_time(): whether the node runs on the virtual clock (--virtual-time).
import time

from boards.esp32 import board as _esp32

_SOL_SOCKET = 1     # Linux's values (the Unix port's socket module may not name them)
_SO_RCVBUF = 8


class Datagram(_esp32.Datagram):
    BROADCAST = "127.255.255.255"  # loopback's subnet broadcast

    def __init__(self, board, ip, port):
        import socket

        self.local = (ip, port)
        self._board = board
        self._socket = socket
        self._peers = {}  # (ip, port) -> the Unix port's raw sockaddr, for sendto()
        self._s = self._b = None
        try:
            # Without SO_REUSEADDR: a second node with this address and port (another
            # $CYPHY_HOME's) gets EADDRINUSE rather than half of this one's traffic.
            self._s = _esp32._udp_socket(socket, self._sockaddr((ip, port)), False)
            self._b = _esp32._udp_socket(socket, self._sockaddr((self.BROADCAST, port)))
            for s in (self._s, self._b):
                # As short a queue as ESP32's: lwIP keeps at most CONFIG_LWIP_UDP_RECVMBOX_SIZE
                # (6 by default; MicroPython's ESP32 sdkconfig.base keeps it) datagrams per
                # socket and drops the rest. This receive buffer (Linux doubles it) holds 6
                # small datagrams or 4 full frames: never more than an ESP32 would.
                s.setsockopt(_SOL_SOCKET, _SO_RCVBUF, 2600)
            self._poll = None
        except BaseException:
            self.close()
            raise

    def _sockaddr(self, addr):
        # The Unix port's sockets take and give raw struct sockaddr bytes; ESP32's take
        # (ip, port). Like ESP32, accept only a dotted IPv4 (no name lookups).
        sa = self._peers.get(addr) if isinstance(addr, tuple) else None
        if sa is None:
            socket = self._socket
            try:
                ip, port = addr
                socket.inet_pton(socket.AF_INET, ip)
                sa = socket.getaddrinfo(ip, port)[0][-1]
            except (OSError, TypeError, ValueError):
                raise ValueError("addr must be (dotted IPv4 string, port), not %r" % (addr,))
            if len(self._peers) >= 16:
                self._peers.clear()
            self._peers[(ip, port)] = sa
        return sa

    def _to(self, addr):
        return self._sockaddr(addr)

    def _recv(self, sock, buf):
        r = _esp32.Datagram._recv(self, sock, buf)
        if r is None:
            return None
        socket = self._socket
        _family, ip, port = socket.sockaddr(r[1])
        return r[0], (socket.inet_ntop(socket.AF_INET, ip), port)

    def _socks(self):
        return (self._s, self._b)

    def recv_into(self, buf):
        r = self._recv(self._s, buf)
        if r is not None:
            return r
        while True:
            r = self._recv(self._b, buf)
            # Skip our own broadcasts, which the host loops back: an ESP32 never sees its own.
            if r is None or r[1][0] != self.local[0]:
                return r

    def close(self):
        if self._b is not None:
            self._b.close()
            self._b = None
        _esp32.Datagram.close(self)


def sim_chip():
    """The sim node's chip: os.uname().machine ("cyphy-sim with ESP32S3") as on hardware,
    else the ROM's own record (boards/sim/rom/_hw.py, CHIP)."""
    import os
    import sys

    chip = _esp32._pins.chip_of_machine(os.uname().machine)
    hw = sys.modules.get("_hw")
    rom_chip = getattr(hw, "CHIP", None)
    if rom_chip and (chip is None or chip == "esp32"):
        return rom_chip  # a ROM that names only "ESP32" in uname still knows its chip
    return chip or "esp32"


class Board(_esp32.Board):
    Datagram = Datagram

    def __init__(self, chip=None):
        if chip in (None, "esp32"):
            chip = sim_chip()  # uname may say only "ESP32" where the ROM knows better
        _esp32.Board.__init__(self, _esp32._pins.CHIP_BOARD[chip])
        self.name = "cyphy-sim"  # with the chip's DevKit pins (self.variant)
        self._virtual = None

    def virtual_time(self):
        # The ROM does not say; its clocks do. Virtual ticks move only while the node
        # sleeps, while a real microsecond counter moves during any busy wait. The host's
        # wall clock (time.time_ns, which the ROM leaves alone) bounds the wait at 2 ms.
        if self._virtual is None:
            t0 = time.ticks_us()
            h0 = time.time_ns()
            while time.ticks_us() == t0:
                if time.time_ns() - h0 > 2_000_000:
                    self._virtual = True
                    return True
            self._virtual = False
        return self._virtual

    def cpu_slowdown(self):
        # The ROM's speed model (boards/sim/rom/_clock.py, host/cyphy/sim/speed.py): the
        # host runs MicroPython this many times faster than the chip. Measured times are
        # host time in both speed modes (with --speed chip the stall comes after each soft
        # callback, not inside the tick).
        import _clock

        s = _clock.current.scale_x1000
        return s / 1000 if s else None

    def info(self):
        i = _esp32.Board.info(self)
        i.update(virtual_time=self.virtual_time(), pin_map=self._d["name"])
        return i
