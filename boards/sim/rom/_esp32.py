# The sim board's `esp32` module: what MicroPython's ESP32 port offers (ports/esp32:
# modesp32.c, esp32_partition.c, esp32_nvs.c) that firmware uses, on the node's flash
# image (_flashdev.IMAGE, the same file handle as the vfs).
#
# esp32.Partition: the ESP-IDF partition table at 0x8000 of the image, parsed here, and
# the partitions' bytes. Errors as the port raises them: check_esp_err() (mphalport.c)
# turns an ESP-IDF error into OSError(-code, "ESP_ERR_NAME"), ESP_FAIL into OSError(1),
# and a partition that is not there into OSError(ENOENT). On the 4 MiB table there is
# one app partition, "factory", and no OTA slots or otadata, so as on such a board
# get_next_update() raises ENOENT, set_boot() ESP_ERR_NOT_FOUND (no otadata) and
# mark_app_valid_cancel_rollback() ESP_FAIL ("Running firmware is factory",
# app_update/esp_ota_ops.c). Erases and writes stall the node like any flash write
# (_flashdev.py).
#
# esp32.NVS: namespaces of typed keys (i32, blob), persistent in the `nvs` partition
# (0x9000, 0x6000), in a format of OUR OWN, not ESP-IDF's NVS pages: two slots of 12 KB,
# each holding the whole store as one record (magic "CYNV", sequence number, length,
# CRC-32, then the entries); a commit writes the other slot, so a reset in the middle
# leaves the previous commit. A real ESP32 given this partition would not recognise it
# (nvs_flash_init fails and MicroPython erases it). Semantics as on ESP32:
# - set_*() changes are seen by get_*() at once but reach flash only at commit()
#   (MicroPython's docs: "Failure to call commit results in changes being lost at the
#   next reset"); the sim enforces that, where ESP-IDF happens to write at set time;
# - a missing key (or one of another type: ESP-IDF looks keys up by type) raises
#   OSError(-0x1102, 'ESP_ERR_NVS_NOT_FOUND') (nvs.h: ESP_ERR_NVS_BASE 0x1100 + 2);
#   get_blob() into a buffer too small: ESP_ERR_NVS_INVALID_LENGTH (0x110c); keys and
#   namespaces longer than 15 characters: ESP_ERR_NVS_KEY_TOO_LONG (0x1109); a store
#   fuller than a slot: ESP_ERR_NVS_NOT_ENOUGH_SPACE (0x1105);
# - set_i32() of a value outside 32 bits: OverflowError (mp_obj_get_int on a 32-bit port).
#
# Also: raw_temperature() (plain ESP32 has this one; mcu_temperature() exists only on
# the S2/S3/C3 and later chips, modesp32.c), gpio_deep_sleep_hold(), WAKEUP_* constants.
# Not here: wake_on_*, ULP, RMT, PCNT, idf_heap_info, idf_task_info.
import struct
from binascii import crc32
import _flashdev

TABLE_ADDR = 0x8000
TABLE_SIZE = 0xC00
_SECTOR = 4096
_ENOENT = 2
# ESP-IDF error codes (esp_err.h, nvs.h)
_ESP_FAIL = -1
_NOT_FOUND = 0x105
_INVALID_SIZE = 0x104
_INVALID_ARG = 0x102
_NVS_NOT_FOUND = 0x1102
_NVS_NOT_ENOUGH_SPACE = 0x1105
_NVS_KEY_TOO_LONG = 0x1109
_NVS_INVALID_LENGTH = 0x110C
_NAMES = {
    _ESP_FAIL: "ESP_FAIL", _NOT_FOUND: "ESP_ERR_NOT_FOUND", _INVALID_SIZE: "ESP_ERR_INVALID_SIZE",
    _INVALID_ARG: "ESP_ERR_INVALID_ARG", _NVS_NOT_FOUND: "ESP_ERR_NVS_NOT_FOUND",
    _NVS_NOT_ENOUGH_SPACE: "ESP_ERR_NVS_NOT_ENOUGH_SPACE", _NVS_KEY_TOO_LONG: "ESP_ERR_NVS_KEY_TOO_LONG",
    _NVS_INVALID_LENGTH: "ESP_ERR_NVS_INVALID_LENGTH",
}


def _esp_err(code):
    """check_esp_err(): OSError(-code, name) (ESP_FAIL: errno 1)."""
    raise OSError(-code, _NAMES.get(code, "ESP_ERR_0x%x" % code))


# ---------------------------------------------------------------- partition table
_table = None


def table():
    """[(type, subtype, address, size, label, encrypted)] from the image, in order."""
    global _table
    if _table is None:
        f = _flashdev.IMAGE
        f.seek(TABLE_ADDR)
        raw = f.read(TABLE_SIZE)
        rows = []
        for i in range(0, TABLE_SIZE, 32):
            if raw[i : i + 2] != b"\xaa\x50":
                break  # the MD5 row (EB EB) or the erased end
            t, st, addr, size = struct.unpack_from("<BBII", raw, i + 2)
            label = bytes(raw[i + 12 : i + 28]).split(b"\x00")[0].decode()
            flags = struct.unpack_from("<I", raw, i + 28)[0]
            rows.append((t, st, addr, size, label, bool(flags & 1)))
        _table = rows
    return _table


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_SECTOR):
        if isinstance(id, tuple):  # a table row: find() and get_next_update()
            row = id
        elif isinstance(id, int):
            if id not in (0, 1):
                raise ValueError
            # no otadata: the bootloader boots, and runs, the factory app
            row = _first(0, 0x00, None) or _first(0, 0xFF, None)
        else:
            row = _first(0, 0xFF, id) or _first(1, 0xFF, id)
        self._init(row, block_size)

    def _init(self, row, block_size):
        if row is None:
            raise OSError(_ENOENT)
        self._row = row
        self._bs = block_size

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=_SECTOR):
        out = []
        for row in table():
            if row[0] == type and (subtype == 0xFF or row[1] == subtype) and (label is None or row[4] == label):
                out.append(Partition(row, block_size))
        return out

    def __repr__(self):
        r = self._row
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % (
            r[0], r[1], r[2], r[3], r[4], r[5])

    def info(self):
        return self._row

    def _check(self, off, n):
        size = self._row[3]
        if off > size:
            _esp_err(_INVALID_ARG)
        if off + n > size:
            _esp_err(_INVALID_SIZE)
        return self._row[2] + off

    def readblocks(self, block, buf, offset=0):
        f = _flashdev.IMAGE
        f.seek(self._check(block * self._bs + offset, len(buf)))
        f.readinto(buf)

    def _erase(self, off, n):
        if off % _SECTOR:
            _esp_err(_INVALID_ARG)
        if n % _SECTOR:
            _esp_err(_INVALID_SIZE)
        base = self._check(off, n)
        for a in range(base, base + n, _SECTOR):
            _flashdev.erase(a)

    def writeblocks(self, block, buf, offset=None):
        off = block * self._bs
        n = len(buf)
        if offset is None:
            # a simple write: erase first, keeping what shares the erased sectors
            lo = off - off % _SECTOR
            hi = (off + n + _SECTOR - 1) // _SECTOR * _SECTOR
            self._check(lo, hi - lo)
            keep = bytearray(hi - lo)
            if lo != off or hi != off + n:
                _flashdev.IMAGE.seek(self._row[2] + lo)
                _flashdev.IMAGE.readinto(keep)
            self._erase(lo, hi - lo)
            if off > lo:
                _flashdev.program(self._row[2] + lo, keep[: off - lo])
            if hi > off + n:
                _flashdev.program(self._row[2] + off + n, keep[off + n - lo :])
        else:
            off += offset
        _flashdev.program(self._check(off, n), buf)

    def ioctl(self, op, arg):
        if op in (1, 2, 3):  # init, deinit, sync
            return 0
        if op == 4:
            return self._row[3] // self._bs
        if op == 5:
            return self._bs
        if op == 6:
            if self._bs != _SECTOR:
                return -22  # -EINVAL
            self._erase(arg * _SECTOR, _SECTOR)
            return 0
        return None

    def set_boot(self):
        # esp_ota_set_boot_partition() needs the otadata partition, which the 4 MiB table
        # lacks: ESP_ERR_NOT_FOUND. (Tables with OTA slots are not modelled.)
        _esp_err(_NOT_FOUND)

    def get_next_update(self):
        for row in table():
            if row[0] == 0 and 0x10 <= row[1] < 0x20 and row[4] != self._row[4]:
                return Partition(row)
        raise OSError(_ENOENT)

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        if Partition(1)._row[1] == 0x00:
            _esp_err(_ESP_FAIL)  # "Running firmware is factory"


def _first(t, st, label):
    for row in table():
        if row[0] == t and (st == 0xFF or row[1] == st) and (label is None or row[4] == label):
            return row
    return None


# ---------------------------------------------------------------- NVS
_I32 = 0x14  # ESP-IDF's nvs_type_t values
_BLOB = 0x42
_MAGIC = b"CYNV"
_HDR = 16  # magic, seq u32, length u32, crc u32
_KEY_MAX = 15  # NVS_KEY_NAME_MAX_SIZE - 1
_store = None  # [seq, slot, {(ns, key): (type, bytes)}] as last committed
_pending = {}  # (ns, key) -> (type, bytes), or None: erased; not yet committed


def _nvs_part():
    row = _first(1, 0x02, None)  # data/nvs
    if row is None:
        raise OSError(-0x110F, "ESP_ERR_NVS_PART_NOT_FOUND")
    return row


def _slot_size(row):
    return row[3] // 2 // _SECTOR * _SECTOR


def _load():
    global _store
    if _store is not None:
        return _store
    row = _nvs_part()
    f = _flashdev.IMAGE
    best = [0, 1, {}]  # as if slot 1 held seq 0: the first commit goes to slot 0
    half = _slot_size(row)
    for slot in (0, 1):
        f.seek(row[2] + slot * half)
        hdr = f.read(_HDR)
        if hdr[:4] != _MAGIC:
            continue
        seq, n, crc = struct.unpack_from("<III", hdr, 4)
        if n > half - _HDR or seq <= best[0]:
            continue
        body = f.read(n)
        if crc32(body) & 0xFFFFFFFF != crc:
            continue  # torn or damaged: the other slot stands
        best = [seq, slot, _decode(body)]
    _store = best
    return _store


def _decode(body):
    d = {}
    i = 0
    n = len(body)
    while i < n:
        ln = body[i]
        ns = bytes(body[i + 1 : i + 1 + ln]).decode()
        i += 1 + ln
        ln = body[i]
        key = bytes(body[i + 1 : i + 1 + ln]).decode()
        i += 1 + ln
        t, vl = struct.unpack_from("<BH", body, i)
        i += 3
        d[(ns, key)] = (t, bytes(body[i : i + vl]))
        i += vl
    return d


def _encode(d):
    out = bytearray()
    for (ns, key), (t, v) in d.items():
        b = ns.encode()
        out.append(len(b))
        out.extend(b)
        b = key.encode()
        out.append(len(b))
        out.extend(b)
        out.extend(struct.pack("<BH", t, len(v)))
        out.extend(v)
    return out


def _check_name(s):
    if not isinstance(s, str):
        raise TypeError("can't convert %s to str" % type(s).__name__)
    if len(s.encode()) > _KEY_MAX:
        _esp_err(_NVS_KEY_TOO_LONG)
    return s


class NVS:
    def __init__(self, namespace):
        self._ns = _check_name(namespace)
        _load()

    def __repr__(self):
        return "<NVS namespace>"

    def _get(self, key, t):
        k = (self._ns, _check_name(key))
        v = _pending[k] if k in _pending else _store[2].get(k)
        if v is None or v[0] != t:
            _esp_err(_NVS_NOT_FOUND)
        return v[1]

    def _set(self, key, t, b):
        _pending[(self._ns, _check_name(key))] = (t, b)

    def set_i32(self, key, value):
        value = int(value)
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        self._set(key, _I32, struct.pack("<i", value))

    def get_i32(self, key):
        return struct.unpack("<i", self._get(key, _I32))[0]

    def set_blob(self, key, value):
        self._set(key, _BLOB, value.encode() if isinstance(value, str) else bytes(value))

    def get_blob(self, key, buf):
        v = self._get(key, _BLOB)
        if len(v) > len(buf):
            _esp_err(_NVS_INVALID_LENGTH)
        buf[: len(v)] = v
        return len(v)

    def erase_key(self, key):
        k = (self._ns, _check_name(key))
        v = _pending[k] if k in _pending else _store[2].get(k)
        if v is None:
            _esp_err(_NVS_NOT_FOUND)
        _pending[k] = None

    def commit(self):
        """Write this namespace's changes to flash (the other slot, then it counts)."""
        ns = self._ns
        mine = [k for k in _pending if k[0] == ns]
        if not mine:
            return
        d = dict(_store[2])
        for k in mine:
            v = _pending[k]
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
        body = _encode(d)
        row = _nvs_part()
        half = _slot_size(row)
        if _HDR + len(body) > half:
            _esp_err(_NVS_NOT_ENOUGH_SPACE)
        seq = _store[0] + 1
        slot = 1 - _store[1]
        rec = _MAGIC + struct.pack("<III", seq, len(body), crc32(body) & 0xFFFFFFFF) + body
        base = row[2] + slot * half
        for a in range(base, base + (len(rec) + _SECTOR - 1) // _SECTOR * _SECTOR, _SECTOR):
            _flashdev.erase(a)
        _flashdev.program(base, rec)
        _store[0] = seq
        _store[1] = slot
        _store[2] = d
        for k in mine:
            del _pending[k]


# ---------------------------------------------------------------- the rest
def raw_temperature():
    # ESP32's internal sensor, raw (roughly degrees F; the die runs warm): a steady value.
    return 128


def gpio_deep_sleep_hold(enable):
    pass  # deep sleep wakes at once on the sim; nothing to hold


def make(board, Module):
    """The `esp32` module of this node (after the image is open: _flashdev.IMAGE)."""
    _flashdev.CLOCK = board.clock
    return Module("esp32", Partition=Partition, NVS=NVS, raw_temperature=raw_temperature,
                  gpio_deep_sleep_hold=gpio_deep_sleep_hold, WAKEUP_ALL_LOW=False, WAKEUP_ANY_HIGH=True)
