"""ESP32 flash images: partition table codec, image files and the LittleFS vfs.

A flash image is a plain file exactly as large as the chip's flash, erased
bytes being 0xFF.  The sim board boots from such a file, and the same bytes
can be written to a real board with esptool, so everything here follows the
on-chip formats exactly:

* the ESP-IDF binary partition table at 0x8000 (the format gen_esp32part.py
  produces and the bootloader parses), and
* the LittleFS v2 filesystem MicroPython keeps in the ``vfs`` partition, with
  the same geometry and cache settings as MicroPython's ``vfs.VfsLfs2``.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import littlefs
from littlefs import LittleFSError

__all__ = [
    "BLOCK_SIZE",
    "FLAG_ENCRYPTED",
    "FLAG_READONLY",
    "FLASH_SIZE_4MB",
    "FlashImageError",
    "MAX_PARTITIONS",
    "MICROPYTHON_ESP32_4MB",
    "PARTITION_TABLE_OFFSET",
    "PARTITION_TABLE_SIZE",
    "Partition",
    "SUBTYPE_FACTORY",
    "SUBTYPE_FAT",
    "SUBTYPE_LITTLEFS",
    "SUBTYPE_NVS",
    "SUBTYPE_OTA",
    "SUBTYPE_OTA_0",
    "SUBTYPE_PHY",
    "SUBTYPE_SPIFFS",
    "TYPE_APP",
    "TYPE_DATA",
    "build_vfs",
    "create_flash_image",
    "decode_partition_table",
    "encode_partition_table",
    "find_partition",
    "read_partition_table",
    "read_vfs",
    "validate_layout",
    "vfs_files",
    "write_vfs",
]

StrPath = str | os.PathLike[str]

# --- geometry ---------------------------------------------------------------

FLASH_SIZE_4MB = 0x400000
PARTITION_TABLE_OFFSET = 0x8000
#: Bytes the table itself may occupy; the rest of its 4 KiB sector is left for
#: a secure-boot signature, so no partition may start before the next sector.
PARTITION_TABLE_SIZE = 0xC00
#: Flash erase-sector size; also the LittleFS block size MicroPython uses.
BLOCK_SIZE = 4096

_FIRST_PARTITION_OFFSET = PARTITION_TABLE_OFFSET + BLOCK_SIZE
_APP_ALIGN = 0x10000  # the MMU maps app images in 64 KiB pages
_DATA_ALIGN = BLOCK_SIZE

# --- partition types --------------------------------------------------------

TYPE_APP = 0x00
TYPE_DATA = 0x01

# app subtypes
SUBTYPE_FACTORY = 0x00
SUBTYPE_OTA_0 = 0x10  # ota_N is 0x10 + N
# data subtypes
SUBTYPE_OTA = 0x00  # otadata
SUBTYPE_PHY = 0x01
SUBTYPE_NVS = 0x02
SUBTYPE_FAT = 0x81  # MicroPython's vfs uses this subtype even for LittleFS
SUBTYPE_SPIFFS = 0x82
SUBTYPE_LITTLEFS = 0x83

FLAG_ENCRYPTED = 0x1
FLAG_READONLY = 0x2

# --- binary layout ----------------------------------------------------------

_ENTRY = struct.Struct("<2sBBII16sI")
_ENTRY_SIZE = _ENTRY.size  # 32
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_MD5_ROW_PREFIX = _MD5_MAGIC + b"\xff" * 14
_LABEL_LEN = 16
#: Entries plus the MD5 row must fit in the 0xC00-byte table (96 rows).
MAX_PARTITIONS = PARTITION_TABLE_SIZE // _ENTRY_SIZE - 1

# --- MicroPython LittleFS parameters ----------------------------------------
# vfs.VfsLfs2 defaults (extmod/vfs_lfsx.c): readsize=32, progsize=32,
# lookahead=32, cache = 4 * max(read, prog), block_cycles = 100.
_LFS_READ_SIZE = 32
_LFS_PROG_SIZE = 32
_LFS_CACHE_SIZE = 4 * max(_LFS_READ_SIZE, _LFS_PROG_SIZE)
_LFS_LOOKAHEAD_SIZE = 32
_LFS_BLOCK_CYCLES = 100
#: Images we build use on-disk version 2.0: every LittleFS v2 release mounts
#: it, including the older littlefs bundled with pre-2024 MicroPython
#: firmware, which rejects the 2.1 format that newer littlefs writes by default.
_LFS_BUILD_DISK_VERSION = 0x0002_0000
_LFS_MAGIC = b"littlefs"


class FlashImageError(ValueError):
    """A partition table, flash image or filesystem is invalid or unusable."""


@dataclass(frozen=True)
class Partition:
    """One row of an ESP-IDF partition table."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        """First byte after the partition."""
        return self.offset + self.size

    def __str__(self) -> str:
        return (
            f"{self.name} (type {self.type:#04x}/{self.subtype:#04x} "
            f"at {self.offset:#x}, size {self.size:#x})"
        )


#: MicroPython's partitions.csv for generic 4 MiB ESP32 boards.
MICROPYTHON_ESP32_4MB: tuple[Partition, ...] = (
    Partition("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
    Partition("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
    Partition("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000),
    Partition("vfs", TYPE_DATA, SUBTYPE_FAT, 0x200000, 0x200000),
)


# --- partition table codec --------------------------------------------------


def _encode_label(name: str) -> bytes:
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise FlashImageError(f"partition label {name!r} is not ASCII") from None
    if not raw:
        raise FlashImageError("partition label is empty")
    if b"\0" in raw:
        raise FlashImageError(f"partition label {name!r} contains a NUL byte")
    if len(raw) > _LABEL_LEN:
        raise FlashImageError(
            f"partition label {name!r} is too long ({len(raw)} bytes, max {_LABEL_LEN})"
        )
    return raw


def validate_layout(parts: Iterable[Partition], flash_size: int | None = FLASH_SIZE_4MB) -> None:
    """Raise FlashImageError unless *parts* is a layout the ESP32 can boot.

    Mirrors gen_esp32part's checks: field ranges, label rules, alignment
    (64 KiB for apps, 4 KiB otherwise), nothing before the end of the
    partition table sector, no overlaps, and (if *flash_size* is given)
    everything inside the flash.
    """
    parts = list(parts)
    if not parts:
        raise FlashImageError("partition table has no partitions")
    if len(parts) > MAX_PARTITIONS:
        raise FlashImageError(
            f"too many partitions ({len(parts)}, max {MAX_PARTITIONS} fit in the table)"
        )
    seen: set[str] = set()
    for p in parts:
        _encode_label(p.name)
        if p.name in seen:
            raise FlashImageError(f"duplicate partition label {p.name!r}")
        seen.add(p.name)
        for field, limit in (("type", 0xFF), ("subtype", 0xFF), ("flags", 0xFFFF_FFFF)):
            value = getattr(p, field)
            if not 0 <= value <= limit:
                raise FlashImageError(f"partition {p.name!r}: {field} {value:#x} out of range")
        if not 0 <= p.offset <= 0xFFFF_FFFF:
            raise FlashImageError(f"partition {p.name!r}: offset {p.offset:#x} out of range")
        if not 0 < p.size <= 0xFFFF_FFFF:
            raise FlashImageError(f"partition {p.name!r}: size {p.size:#x} out of range")
        align = _APP_ALIGN if p.type == TYPE_APP else _DATA_ALIGN
        if p.offset % align:
            raise FlashImageError(
                f"partition {p.name!r}: offset {p.offset:#x} is not aligned to {align:#x}"
            )
        if p.size % _DATA_ALIGN:
            raise FlashImageError(
                f"partition {p.name!r}: size {p.size:#x} is not a multiple of {_DATA_ALIGN:#x}"
            )
        if p.offset < _FIRST_PARTITION_OFFSET:
            raise FlashImageError(
                f"partition {p.name!r} at {p.offset:#x} overlaps the bootloader/partition "
                f"table region (partitions must start at or after {_FIRST_PARTITION_OFFSET:#x})"
            )
        if flash_size is not None and p.end > flash_size:
            raise FlashImageError(
                f"partition {p.name!r} ends at {p.end:#x}, beyond the flash size {flash_size:#x}"
            )
    ordered = sorted(parts, key=lambda p: p.offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.offset < a.end:
            raise FlashImageError(
                f"partitions {a.name!r} ({a.offset:#x}-{a.end:#x}) and "
                f"{b.name!r} ({b.offset:#x}-{b.end:#x}) overlap"
            )


def encode_partition_table(
    parts: Iterable[Partition], flash_size: int | None = FLASH_SIZE_4MB
) -> bytes:
    """Binary partition table (exactly PARTITION_TABLE_SIZE bytes), entries in the given order."""
    parts = list(parts)
    validate_layout(parts, flash_size)
    rows = b"".join(
        _ENTRY.pack(
            _ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, _encode_label(p.name), p.flags
        )
        for p in parts
    )
    table = rows + _MD5_ROW_PREFIX + hashlib.md5(rows).digest()
    return table.ljust(PARTITION_TABLE_SIZE, b"\xff")


def decode_partition_table(data: bytes, flash_size: int | None = None) -> list[Partition]:
    """Parse a binary partition table, verifying its MD5 row and the layout.

    *data* is the table region (normally PARTITION_TABLE_SIZE bytes read at
    PARTITION_TABLE_OFFSET); only its first 0xC00 bytes are looked at.
    """
    data = bytes(data[:PARTITION_TABLE_SIZE])
    parts: list[Partition] = []
    for index in range(len(data) // _ENTRY_SIZE):
        start = index * _ENTRY_SIZE
        row = data[start : start + _ENTRY_SIZE]
        magic = row[:2]
        if magic == _MD5_MAGIC:
            if row[:16] != _MD5_ROW_PREFIX:
                raise FlashImageError(f"malformed MD5 row at entry {index}")
            expected = hashlib.md5(data[:start]).digest()
            if row[16:] != expected:
                raise FlashImageError(
                    f"partition table MD5 mismatch (stored {row[16:].hex()}, "
                    f"computed {expected.hex()})"
                )
            if not parts:
                raise FlashImageError("partition table has no partitions")
            validate_layout(parts, flash_size)
            return parts
        if row == b"\xff" * _ENTRY_SIZE:
            if not parts:
                raise FlashImageError("partition table is blank (all 0xFF)")
            raise FlashImageError(f"partition table has no MD5 row (ends at entry {index})")
        if magic != _ENTRY_MAGIC:
            raise FlashImageError(f"bad magic {magic.hex()} at entry {index} (expected aa50)")
        _, ptype, subtype, offset, size, label, flags = _ENTRY.unpack(row)
        try:
            name = label.split(b"\0", 1)[0].decode("ascii")
        except UnicodeDecodeError:
            raise FlashImageError(f"label of entry {index} is not ASCII: {label!r}") from None
        parts.append(Partition(name, ptype, subtype, offset, size, flags))
    raise FlashImageError(
        f"partition table truncated: no MD5 row within {len(data):#x} bytes"
    )


# --- flash image files ------------------------------------------------------


def create_flash_image(
    path: StrPath,
    layout: Iterable[Partition] = MICROPYTHON_ESP32_4MB,
    flash_size: int = FLASH_SIZE_4MB,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a fresh, fully erased image holding *layout*'s partition table.

    The file appears atomically (written to a temporary file in the same
    directory, fsynced, then moved into place), so a crash or error never
    leaves a half-written image under *path*.
    """
    path = Path(path)
    if flash_size < _FIRST_PARTITION_OFFSET or flash_size % BLOCK_SIZE:
        raise FlashImageError(
            f"flash size {flash_size:#x} must be a multiple of {BLOCK_SIZE:#x} "
            f"and at least {_FIRST_PARTITION_OFFSET:#x}"
        )
    table = encode_partition_table(layout, flash_size)
    if not overwrite and path.exists():
        raise FlashImageError(f"{path} already exists (pass overwrite=True to replace it)")

    image = bytearray(b"\xff") * flash_size
    image[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + len(table)] = table

    parent = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is needlessly private for an image
        if overwrite:
            os.replace(tmp, path)
        else:
            # link() refuses to clobber, closing the gap between the exists()
            # check above and publishing the file.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FlashImageError(
                    f"{path} already exists (pass overwrite=True to replace it)"
                ) from None
            except OSError:
                # No hard links on this filesystem: fall back to a plain
                # (still atomic, but check-then-act) rename.
                if path.exists():
                    raise FlashImageError(
                        f"{path} already exists (pass overwrite=True to replace it)"
                    ) from None
                os.replace(tmp, path)
            else:
                tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename in *directory* durable (best effort: not every OS allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_partition_table(path: StrPath) -> list[Partition]:
    """Partition table of the image file at *path* (its size is the flash size)."""
    with open(path, "rb") as f:
        flash_size = os.fstat(f.fileno()).st_size
        if flash_size < PARTITION_TABLE_OFFSET + PARTITION_TABLE_SIZE:
            raise FlashImageError(
                f"{path}: image is {flash_size:#x} bytes, too small to hold a partition "
                f"table at {PARTITION_TABLE_OFFSET:#x}"
            )
        f.seek(PARTITION_TABLE_OFFSET)
        data = f.read(PARTITION_TABLE_SIZE)
    try:
        return decode_partition_table(data, flash_size)
    except FlashImageError as e:
        raise FlashImageError(f"{path}: {e}") from None


def find_partition(path_or_parts: StrPath | Iterable[Partition], name: str) -> Partition:
    """The partition labelled *name*, from an image file or a list of partitions."""
    if isinstance(path_or_parts, (str, os.PathLike)):
        parts = read_partition_table(path_or_parts)
    else:
        parts = list(path_or_parts)
    for p in parts:
        if p.name == name:
            return p
    available = ", ".join(repr(p.name) for p in parts) or "none"
    raise FlashImageError(f"no partition named {name!r} (available: {available})")


def _read_region(path: StrPath, part: Partition) -> bytes:
    with open(path, "rb") as f:
        f.seek(part.offset)
        data = f.read(part.size)
    if len(data) != part.size:
        raise FlashImageError(f"{path}: image is truncated inside partition {part}")
    return data


# --- LittleFS vfs -----------------------------------------------------------


def _lfs(buffer: bytearray, *, disk_version: int = 0) -> littlefs.LittleFS:
    """Unmounted LittleFS over *buffer* with MicroPython's VfsLfs2 settings."""
    return littlefs.LittleFS(
        littlefs.UserContext(buffer=buffer),
        mount=False,  # the default mount=True silently formats on failure
        block_size=BLOCK_SIZE,
        block_count=len(buffer) // BLOCK_SIZE,
        read_size=_LFS_READ_SIZE,
        prog_size=_LFS_PROG_SIZE,
        cache_size=_LFS_CACHE_SIZE,
        lookahead_size=_LFS_LOOKAHEAD_SIZE,
        block_cycles=_LFS_BLOCK_CYCLES,
        disk_version=disk_version,
    )


def _check_fs_size(size: int) -> None:
    if size < 2 * BLOCK_SIZE or size % BLOCK_SIZE:
        raise FlashImageError(
            f"filesystem size {size:#x} must be a multiple of {BLOCK_SIZE:#x} "
            f"and at least two blocks"
        )


def _mount_image(data: bytes, where: str) -> littlefs.LittleFS:
    if data.count(0xFF) == len(data):
        raise FlashImageError(f"{where} is blank (never formatted)")
    _check_fs_size(len(data))
    fs = _lfs(bytearray(data))
    try:
        fs.mount()
    except LittleFSError as e:
        # The superblock pair is blocks 0/1; its entry carries the magic
        # string 8 bytes into the block.
        if _LFS_MAGIC in (data[8:16], data[BLOCK_SIZE + 8 : BLOCK_SIZE + 16]):
            raise FlashImageError(
                f"{where} has a LittleFS superblock but cannot be mounted with "
                f"block size {BLOCK_SIZE} x {len(data) // BLOCK_SIZE} blocks ({e.name})"
            ) from None
        raise FlashImageError(f"{where} does not contain a LittleFS v2 filesystem ({e.name})") from None
    return fs


def _walk_files(fs: littlefs.LittleFS, directory: str = "/") -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    prefix = directory.rstrip("/") + "/"
    for entry in sorted(fs.scandir(directory), key=lambda e: e.name):
        path = prefix + entry.name
        if entry.type == littlefs.LFSStat.TYPE_DIR:
            files.update(_walk_files(fs, path))
        else:
            with fs.open(path, "rb") as f:
                files[path] = f.read()
    return files


def vfs_files(data: bytes) -> dict[str, bytes]:
    """Every file in a LittleFS image (*data* is the whole filesystem)."""
    fs = _mount_image(data, "filesystem image")
    try:
        return _walk_files(fs)
    finally:
        fs.unmount()


def read_vfs(path: StrPath, name: str = "vfs") -> dict[str, bytes]:
    """Every file in the image's LittleFS partition *name*, keyed by absolute path."""
    part = find_partition(path, name)
    fs = _mount_image(_read_region(path, part), f"{name} partition")
    try:
        return _walk_files(fs)
    finally:
        fs.unmount()


def _normalize_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Absolute, canonical paths -> bytes, rejecting anything LittleFS or MicroPython can't hold."""
    out: dict[str, bytes] = {}
    for raw_path, content in files.items():
        parts = raw_path.split("/")
        if raw_path.startswith("/"):
            parts = parts[1:]
        if not parts or any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise FlashImageError(f"invalid file path {raw_path!r}")
        path = "/" + "/".join(parts)
        if path in out:
            raise FlashImageError(f"file {path!r} given twice")
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"content of {path!r} must be bytes, not {type(content).__name__}")
        out[path] = bytes(content)
    for path in out:
        parent = path.rsplit("/", 1)[0]
        while parent:
            if parent in out:
                raise FlashImageError(f"{parent!r} is both a file and the directory of {path!r}")
            parent = parent.rsplit("/", 1)[0]
    return out


def build_vfs(files: Mapping[str, bytes], size: int) -> bytes:
    """A freshly formatted LittleFS image of exactly *size* bytes holding *files*.

    Keys are paths such as "/boot.py" or "lib/x.py"; parent directories are
    created as needed.  The result is deterministic for a given input and
    mounts with MicroPython's default ``vfs.VfsLfs2(bdev)``.
    """
    _check_fs_size(size)
    normalized = _normalize_files(files)
    fs = _lfs(bytearray(b"\xff") * size, disk_version=_LFS_BUILD_DISK_VERSION)
    fs.format()
    fs.mount()
    current = "?"
    try:
        for path in sorted(normalized):
            current = path
            parent = path.rsplit("/", 1)[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                f.write(normalized[path])
    except LittleFSError as e:
        if e.code == LittleFSError.Error.LFS_ERR_NOSPC:
            total = sum(map(len, normalized.values()))
            raise FlashImageError(
                f"files ({len(normalized)} files, {total} bytes) do not fit "
                f"in a {size:#x}-byte filesystem"
            ) from None
        if e.code == LittleFSError.Error.LFS_ERR_NAMETOOLONG:
            raise FlashImageError(f"file name too long: {current!r}") from None
        raise FlashImageError(f"cannot store {current!r}: {e}") from None
    finally:
        fs.unmount()
    return bytes(fs.context.buffer)


def write_vfs(path: StrPath, files: Mapping[str, bytes], name: str = "vfs") -> None:
    """Replace partition *name* of the image at *path* with a new LittleFS holding *files*.

    Only that partition's bytes change; the image is updated in place.
    """
    part = find_partition(path, name)
    data = build_vfs(files, part.size)
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size < part.end:
            raise FlashImageError(f"{path}: image is truncated inside partition {part}")
        f.seek(part.offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
