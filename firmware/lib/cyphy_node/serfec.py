# Forward error correction for the protocol on a noisy serial line (docs/protocol.md,
# "Serial", "On a noisy line"). A frame goes as blocks of 3 bytes, each with a 2-byte header
# and a CRC-8, COBS-encoded and 00-delimited (8 bytes on the wire), and the whole sequence of
# blocks is sent ROUNDS times. A lost or changed byte costs one copy of one block; the 00s
# resynchronise after a lost byte; the receiver keeps the first copy of each block that
# checks, and has the frame when it holds every block. The frame's own tag (or CRC-32) then
# catches the rare block that a CRC-8 let through. Used by both ends: the node (console.py)
# and the host (cyphy.links); a node answers in blocks when the host's frames come in blocks.
#
# Block (6 bytes before COBS): H, I, three frame bytes, CRC-8 of the first five.
#   H = 0xE0 | P << 2 | F: F the frame's number (mod 4); P = 3 in every block but the last,
#       whose P (0..2) counts the padding bytes at its end. 0xE0..0xEF is never a frame's
#       first byte (VF), and a 7-byte chunk is never a frame (a frame is at least 9 bytes).
#   I = the block's index in the frame (0..87).
from .proto import cobs_encode

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

ROUNDS = const(12)          # copies of every block: at 5 % loss + 5 % change per byte a
                            # copy survives ~40 %, a block is lost once in ~500 frames' blocks
DATA = const(3)             # frame bytes per block
WIRE = const(8)             # a block on the wire: COBS (7) + 00
CHUNK = const(7)            # a block's COBS chunk, without its 00
_MAX_BLOCKS = const(85)     # (MAX_FRAME + DATA - 1) // DATA


def _table():
    t = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        t[i] = c
    return bytes(t)


_CRC8 = _table()


def crc8(b, n):
    c = 0
    t = _CRC8
    for i in range(n):
        c = t[c ^ b[i]]
    return c


def round_size(n):
    """Bytes of one round of an n-byte frame (with its leading 00)."""
    return 1 + (n + DATA - 1) // DATA * WIRE


def encode_round(frame, n, dst, fid, blk):
    """One round (every block of frame[0:n]) into dst, after a leading 00; returns its
    length. blk: a 6-byte scratch buffer. Allocation-free."""
    nb = (n + DATA - 1) // DATA
    pad = nb * DATA - n
    dst[0] = 0
    o = 1
    for i in range(nb):
        blk[0] = 0xE0 | ((pad if i == nb - 1 else 3) << 2) | (fid & 3)
        blk[1] = i
        k = i * DATA
        for j in range(DATA):
            blk[2 + j] = frame[k + j] if k + j < n else 0
        blk[5] = crc8(blk, 5)
        o = cobs_encode(blk, 6, dst, o)
        dst[o] = 0
        o += 1
    return o


class Assembler:
    """Frames from received blocks. block(chunk, n) takes one 00-delimited chunk (still
    COBS-encoded); returns the frame (bytes) when it completes one, else None.
    Counts blocks that do not check (`bad`)."""

    def __init__(self):
        self.buf = bytearray(_MAX_BLOCKS * DATA)
        self.have = bytearray(_MAX_BLOCKS)
        self.blk = bytearray(6)
        self.fid = -1
        self.done = -1               # the frame just delivered: its later copies are ignored
        self.nb = 0                  # blocks in the frame (0: not known yet)
        self.pad = 0
        self.bad = 0

    def _unpack(self, chunk):
        # COBS-decode a CHUNK-byte chunk into blk (6 bytes); False if it is not one block
        b = self.blk
        i = 0
        o = 0
        while i < CHUNK:
            code = chunk[i]
            if code == 0 or i + code > CHUNK:
                return False
            for j in range(i + 1, i + code):
                b[o] = chunk[j]
                o += 1
            i += code
            if i < CHUNK:
                if o >= 6:
                    return False
                b[o] = 0
                o += 1
        return o == 6 and b[0] & 0xF0 == 0xE0 and crc8(b, 5) == b[5]

    def block(self, chunk, n):
        """chunk[0:n]: one chunk between two 00s."""
        if n != CHUNK or not self._unpack(chunk):
            self.bad += 1
            return None
        b = self.blk
        fid = b[0] & 3
        p = b[0] >> 2 & 3
        i = b[1]
        if i >= _MAX_BLOCKS or (p != 3 and (i + 1) * DATA - p < 9):
            self.bad += 1
            return None
        if fid == self.done:
            return None
        if fid != self.fid:
            self.fid = fid
            self.done = -1
            self.nb = 0
            h = self.have
            for k in range(_MAX_BLOCKS):
                h[k] = 0
        if p != 3:
            self.nb = i + 1
            self.pad = p
        if not self.have[i]:
            self.have[i] = 1
            k = i * DATA
            self.buf[k:k + DATA] = b[2:5]
        nb = self.nb
        if not nb:
            return None
        h = self.have
        for k in range(nb):
            if not h[k]:
                return None
        self.done = fid
        self.fid = -1
        return bytes(self.buf[:nb * DATA - self.pad])
