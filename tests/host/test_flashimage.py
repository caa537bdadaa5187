"""Tests for cyphy.flashimage: partition table codec, image files, LittleFS vfs.

The interop tests run the real MicroPython Unix port as a subprocess and
mount the image's vfs partition through a block device that behaves like the
ESP32 port's esp32.Partition, so they check the exact bytes a board sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyphy import flashimage as fi
from cyphy.flashimage import (
    BLOCK_SIZE,
    FLASH_SIZE_4MB,
    MICROPYTHON_ESP32_4MB,
    PARTITION_TABLE_OFFSET,
    PARTITION_TABLE_SIZE,
    SUBTYPE_FACTORY,
    SUBTYPE_FAT,
    SUBTYPE_NVS,
    SUBTYPE_PHY,
    TYPE_APP,
    TYPE_DATA,
    FlashImageError,
    Partition,
    build_vfs,
    create_flash_image,
    decode_partition_table,
    encode_partition_table,
    find_partition,
    read_partition_table,
    read_vfs,
    vfs_files,
    write_vfs,
)

REPO = Path(__file__).resolve().parents[2]
VFS = MICROPYTHON_ESP32_4MB[3]

# Rows of MICROPYTHON_ESP32_4MB written out by hand from the format description:
# magic AA 50, type, subtype, offset u32 LE, size u32 LE, label[16] NUL-padded, flags u32 LE.
EXPECTED_ROWS = [
    "aa50 01 02 00900000 00600000" + "6e7673".ljust(32, "0") + "00000000",  # nvs
    "aa50 01 01 00f00000 00100000" + "7068795f696e6974".ljust(32, "0") + "00000000",  # phy_init
    "aa50 00 00 00000100 00001f00" + "666163746f7279".ljust(32, "0") + "00000000",  # factory
    "aa50 01 81 00002000 00002000" + "766673".ljust(32, "0") + "00000000",  # vfs
]


def _row(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text.replace(" ", ""))


def _raw_table(rows: list[bytes]) -> bytes:
    """A table from raw rows with a correct MD5 row (bypasses encode-side validation)."""
    body = b"".join(rows)
    return (body + b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()).ljust(
        PARTITION_TABLE_SIZE, b"\xff"
    )


def _pack(name: bytes, ptype: int, subtype: int, offset: int, size: int, flags: int = 0) -> bytes:
    return struct.pack("<2sBBII16sI", b"\xaa\x50", ptype, subtype, offset, size, name, flags)


# --- partition table codec --------------------------------------------------


def test_layout_constants() -> None:
    assert [(p.name, p.type, p.subtype, p.offset, p.size) for p in MICROPYTHON_ESP32_4MB] == [
        ("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
        ("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
        ("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000),
        ("vfs", TYPE_DATA, SUBTYPE_FAT, 0x200000, 0x200000),
    ]
    assert (TYPE_APP, TYPE_DATA, SUBTYPE_FACTORY, SUBTYPE_PHY, SUBTYPE_NVS, SUBTYPE_FAT) == (
        0, 1, 0x00, 0x01, 0x02, 0x81
    )
    assert (FLASH_SIZE_4MB, PARTITION_TABLE_OFFSET, PARTITION_TABLE_SIZE, BLOCK_SIZE) == (
        0x400000, 0x8000, 0xC00, 4096
    )


def test_round_trip_micropython_layout() -> None:
    table = encode_partition_table(MICROPYTHON_ESP32_4MB)
    assert len(table) == PARTITION_TABLE_SIZE
    assert decode_partition_table(table) == list(MICROPYTHON_ESP32_4MB)


def test_entry_bytes_match_hand_derived_rows() -> None:
    table = encode_partition_table(MICROPYTHON_ESP32_4MB)
    for i, expected in enumerate(EXPECTED_ROWS):
        assert table[i * 32 : (i + 1) * 32] == _row(expected), f"row {i}"


def test_md5_row_and_padding() -> None:
    table = encode_partition_table(MICROPYTHON_ESP32_4MB)
    body = b"".join(_row(r) for r in EXPECTED_ROWS)
    md5_row = table[128:160]
    assert md5_row[:2] == b"\xeb\xeb"
    assert md5_row[2:16] == b"\xff" * 14
    assert md5_row[16:] == hashlib.md5(body).digest()
    assert table[160:] == b"\xff" * (PARTITION_TABLE_SIZE - 160)


def test_flags_and_entry_order_are_preserved() -> None:
    parts = [
        Partition("b", TYPE_DATA, 0x99, 0x20000, 0x1000, flags=fi.FLAG_READONLY),
        Partition("a", TYPE_APP, 0x10, 0x10000, 0x10000, flags=fi.FLAG_ENCRYPTED),
    ]
    table = encode_partition_table(parts)
    assert table[28:32] == b"\x02\x00\x00\x00"
    assert decode_partition_table(table) == parts


def test_label_of_exactly_16_bytes_has_no_terminator() -> None:
    part = Partition("x" * 16, TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x1000)
    table = encode_partition_table([part])
    assert table[12:28] == b"x" * 16
    assert decode_partition_table(table) == [part]


def test_max_partitions_fill_the_table_exactly() -> None:
    parts = [
        Partition(f"p{i}", TYPE_DATA, SUBTYPE_NVS, 0x9000 + i * 0x1000, 0x1000)
        for i in range(fi.MAX_PARTITIONS)
    ]
    assert fi.MAX_PARTITIONS == 95
    table = encode_partition_table(parts)
    assert table[-32:-30] == b"\xeb\xeb"
    assert decode_partition_table(table) == parts


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "no partitions"),
        ([Partition("x" * 17, 1, 2, 0x9000, 0x1000)], "too long"),
        ([Partition("", 1, 2, 0x9000, 0x1000)], "empty"),
        ([Partition("nvsé", 1, 2, 0x9000, 0x1000)], "not ASCII"),
        ([Partition("a\0b", 1, 2, 0x9000, 0x1000)], "NUL"),
        ([Partition("a", 1, 2, 0x9000, 0x1000), Partition("a", 1, 2, 0xA000, 0x1000)], "duplicate"),
        ([Partition("a", 256, 2, 0x9000, 0x1000)], "type 0x100 out of range"),
        ([Partition("a", 1, -1, 0x9000, 0x1000)], "subtype"),
        ([Partition("a", 1, 2, 0x9000, 0x1000, flags=1 << 32)], "flags"),
        ([Partition("a", 1, 2, 0x9000, 0)], "size 0x0 out of range"),
        ([Partition("a", 1, 2, 0x9800, 0x1000)], "not aligned to 0x1000"),
        ([Partition("app", 0, 0, 0x11000, 0x10000)], "not aligned to 0x10000"),
        ([Partition("a", 1, 2, 0x9000, 0x1800)], "not a multiple of 0x1000"),
        ([Partition("a", 1, 2, 0x8000, 0x1000)], "partition table region"),
        ([Partition("a", 1, 2, 0x0, 0x1000)], "partition table region"),
        ([Partition("a", 1, 2, 0x3FF000, 0x2000)], "beyond the flash size"),
        (
            [Partition("a", 1, 2, 0x9000, 0x2000), Partition("b", 1, 2, 0xA000, 0x1000)],
            "'a' (0x9000-0xb000) and 'b' (0xa000-0xb000) overlap",
        ),
        (
            [Partition(f"p{i}", 1, 2, 0x9000 + i * 0x1000, 0x1000) for i in range(96)],
            "too many partitions",
        ),
    ],
)
def test_encode_rejects_invalid_layouts(parts: list[Partition], message: str) -> None:
    with pytest.raises(FlashImageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        encode_partition_table(parts)


def test_flash_size_bound_is_optional() -> None:
    big = [Partition("big", TYPE_DATA, SUBTYPE_FAT, 0x400000, 0x400000)]
    with pytest.raises(FlashImageError, match="beyond the flash size 0x400000"):
        encode_partition_table(big)
    assert decode_partition_table(encode_partition_table(big, flash_size=None)) == big
    with pytest.raises(FlashImageError, match="beyond the flash size"):
        decode_partition_table(encode_partition_table(big, flash_size=None), FLASH_SIZE_4MB)


def test_flash_image_error_is_a_value_error() -> None:
    assert issubclass(FlashImageError, ValueError)


def _corrupt(table: bytes, offset: int, value: int) -> bytes:
    data = bytearray(table)
    data[offset] = value
    return bytes(data)


def test_decode_bad_magic_names_entry() -> None:
    table = _corrupt(encode_partition_table(MICROPYTHON_ESP32_4MB), 2 * 32 + 1, 0x51)
    with pytest.raises(FlashImageError, match="bad magic aa51 at entry 2"):
        decode_partition_table(table)


def test_decode_md5_mismatch() -> None:
    table = _corrupt(encode_partition_table(MICROPYTHON_ESP32_4MB), 3 * 32 + 13, ord("w"))
    with pytest.raises(FlashImageError, match="MD5 mismatch"):
        decode_partition_table(table)


def test_decode_malformed_md5_row() -> None:
    table = _corrupt(encode_partition_table(MICROPYTHON_ESP32_4MB), 4 * 32 + 5, 0x00)
    with pytest.raises(FlashImageError, match="malformed MD5 row at entry 4"):
        decode_partition_table(table)


def test_decode_missing_md5_row() -> None:
    rows = b"".join(_row(r) for r in EXPECTED_ROWS)
    with pytest.raises(FlashImageError, match="no MD5 row"):
        decode_partition_table(rows.ljust(PARTITION_TABLE_SIZE, b"\xff"))


def test_decode_blank_table() -> None:
    with pytest.raises(FlashImageError, match="blank"):
        decode_partition_table(b"\xff" * PARTITION_TABLE_SIZE)


def test_decode_md5_row_without_entries() -> None:
    with pytest.raises(FlashImageError, match="no partitions"):
        decode_partition_table(_raw_table([]))


def test_decode_truncated() -> None:
    rows = b"".join(_row(r) for r in EXPECTED_ROWS)
    with pytest.raises(FlashImageError, match="truncated"):
        decode_partition_table(rows)


def test_decode_non_ascii_label() -> None:
    table = _raw_table([_pack(b"nv\xe9", 1, 2, 0x9000, 0x1000)])
    with pytest.raises(FlashImageError, match="label of entry 0 is not ASCII"):
        decode_partition_table(table)


def test_decode_validates_layout() -> None:
    overlapping = _raw_table(
        [_pack(b"a", 1, 2, 0x9000, 0x2000), _pack(b"b", 1, 2, 0xA000, 0x1000)]
    )
    with pytest.raises(FlashImageError, match="overlap"):
        decode_partition_table(overlapping)


def test_decode_ignores_bytes_after_table_region() -> None:
    table = encode_partition_table(MICROPYTHON_ESP32_4MB) + b"\x00" * 0x400
    assert decode_partition_table(table) == list(MICROPYTHON_ESP32_4MB)


_FLASH_16MB = 0x1000000


@st.composite
def layouts(draw: st.DrawFn) -> list[Partition]:
    """Random valid layouts: non-overlapping, aligned, unique labels, any order."""
    count = draw(st.integers(1, 20))
    names = draw(
        st.lists(
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    parts = []
    offset = 0x9000
    for name in names:
        is_app = draw(st.booleans())
        align = 0x10000 if is_app else 0x1000
        offset += draw(st.integers(0, 8)) * 0x1000
        offset = -(-offset // align) * align
        size = draw(st.integers(1, 64)) * 0x1000
        parts.append(
            Partition(
                name,
                TYPE_APP if is_app else draw(st.integers(1, 0xFF)),
                draw(st.integers(0, 0xFF)),
                offset,
                size,
                draw(st.integers(0, 0xFFFF_FFFF)),
            )
        )
        offset += size
    return draw(st.permutations(parts))


@settings(derandomize=True, deadline=None, max_examples=200)
@given(layouts())
def test_round_trip_random_layouts(parts: list[Partition]) -> None:
    table = encode_partition_table(parts, flash_size=_FLASH_16MB)
    assert len(table) == PARTITION_TABLE_SIZE
    assert decode_partition_table(table, _FLASH_16MB) == parts


# --- flash image files ------------------------------------------------------


def test_create_flash_image(tmp_path: Path) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    data = path.read_bytes()
    assert len(data) == FLASH_SIZE_4MB
    table_end = PARTITION_TABLE_OFFSET + PARTITION_TABLE_SIZE
    assert data[PARTITION_TABLE_OFFSET:table_end] == encode_partition_table(MICROPYTHON_ESP32_4MB)
    assert data[:PARTITION_TABLE_OFFSET].count(0xFF) == PARTITION_TABLE_OFFSET
    assert data[table_end:].count(0xFF) == FLASH_SIZE_4MB - table_end
    assert read_partition_table(path) == list(MICROPYTHON_ESP32_4MB)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flash.bin"]


def test_create_custom_layout_and_size(tmp_path: Path) -> None:
    layout = [Partition("vfs", TYPE_DATA, SUBTYPE_FAT, 0x10000, 0x10000)]
    path = create_flash_image(tmp_path / "small.bin", layout, flash_size=0x20000)
    assert path.stat().st_size == 0x20000
    assert read_partition_table(path) == layout


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    path.write_bytes(b"precious")
    with pytest.raises(FlashImageError, match="already exists"):
        create_flash_image(path)
    assert path.read_bytes() == b"precious"
    create_flash_image(path, overwrite=True)
    assert path.stat().st_size == FLASH_SIZE_4MB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flash.bin"]


def test_create_without_hard_link_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(fi.os, "link", no_links)
    path = create_flash_image(tmp_path / "flash.bin")
    assert read_partition_table(path) == list(MICROPYTHON_ESP32_4MB)
    with pytest.raises(FlashImageError, match="already exists"):
        create_flash_image(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flash.bin"]


def test_create_rejects_bad_layout_without_touching_disk(tmp_path: Path) -> None:
    bad = [Partition("vfs", TYPE_DATA, SUBTYPE_FAT, 0x200000, 0x400000)]
    with pytest.raises(FlashImageError, match="beyond the flash size"):
        create_flash_image(tmp_path / "flash.bin", bad)
    with pytest.raises(FlashImageError, match="flash size"):
        create_flash_image(tmp_path / "flash.bin", flash_size=0x8000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_create_leaves_no_partial_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    path = tmp_path / "flash.bin"
    if overwrite:
        path.write_bytes(b"old image")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fi.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        create_flash_image(path, overwrite=overwrite)
    monkeypatch.undo()
    if overwrite:
        assert path.read_bytes() == b"old image"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["flash.bin"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_read_partition_table_errors_name_the_file(tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(b"\xff" * 0x8000)
    with pytest.raises(FlashImageError, match="too small"):
        read_partition_table(small)
    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * 0x10000)
    with pytest.raises(FlashImageError, match=r"blank\.bin: partition table is blank"):
        read_partition_table(blank)


def test_read_partition_table_checks_against_file_size(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    create_flash_image(path)
    with open(path, "r+b") as f:
        f.truncate(0x100000)  # a 1 MiB "flash" cannot hold the 4 MiB layout
    with pytest.raises(FlashImageError, match="beyond the flash size 0x100000"):
        read_partition_table(path)


def test_find_partition(tmp_path: Path) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    assert find_partition(path, "vfs") == VFS
    assert find_partition(str(path), "nvs") == MICROPYTHON_ESP32_4MB[0]
    assert find_partition(MICROPYTHON_ESP32_4MB, "factory") == MICROPYTHON_ESP32_4MB[2]
    with pytest.raises(FlashImageError, match=r"no partition named 'ota_0' \(available: 'nvs', "):
        find_partition(MICROPYTHON_ESP32_4MB, "ota_0")


# --- LittleFS vfs (host side) -----------------------------------------------

SAMPLE_FILES = {
    "/boot.py": b"# boot\n",
    "/main.py": b"import app\napp.run()\n",
    "/lib/app.py": b"def run():\n    print('running')\n",
    "/lib/pkg/__init__.py": b"",
    "/data/blob.bin": bytes(range(256)) * 40,  # spans several blocks
}


def test_build_vfs_round_trip() -> None:
    image = build_vfs(SAMPLE_FILES, 64 * BLOCK_SIZE)
    assert len(image) == 64 * BLOCK_SIZE
    assert vfs_files(image) == SAMPLE_FILES


def test_build_vfs_is_deterministic_and_normalizes_paths() -> None:
    relative = {k.lstrip("/"): v for k, v in reversed(list(SAMPLE_FILES.items()))}
    assert build_vfs(relative, 32 * BLOCK_SIZE) == build_vfs(SAMPLE_FILES, 32 * BLOCK_SIZE)


def test_build_vfs_uses_micropython_geometry_and_disk_version_2_0() -> None:
    import littlefs

    image = bytearray(build_vfs({"/a": b"a"}, 16 * BLOCK_SIZE))
    fs = littlefs.LittleFS(
        littlefs.UserContext(buffer=image), mount=False, block_size=BLOCK_SIZE, block_count=0
    )
    fs.mount()  # block_count=0: take the geometry from the superblock
    stat = fs.fs_stat()
    fs.unmount()
    assert (stat.block_size, stat.block_count) == (BLOCK_SIZE, 16)
    # 2.0, not littlefs' newer default 2.1, so older MicroPython firmware can mount it.
    assert stat.disk_version == 0x0002_0000


def test_build_vfs_empty() -> None:
    assert vfs_files(build_vfs({}, 2 * BLOCK_SIZE)) == {}


@pytest.mark.parametrize(
    ("files", "size", "error", "message"),
    [
        ({}, 4 * BLOCK_SIZE + 1, FlashImageError, "multiple of 0x1000"),
        ({}, BLOCK_SIZE, FlashImageError, "at least two blocks"),
        ({"/big": b"x" * 100_000}, 8 * BLOCK_SIZE, FlashImageError, "do not fit"),
        ({"/" + "n" * 256: b""}, 8 * BLOCK_SIZE, FlashImageError, "name too long"),
        ({"/": b""}, 8 * BLOCK_SIZE, FlashImageError, "invalid file path"),
        ({"": b""}, 8 * BLOCK_SIZE, FlashImageError, "invalid file path"),
        ({"/a//b": b""}, 8 * BLOCK_SIZE, FlashImageError, "invalid file path"),
        ({"/a/../b": b""}, 8 * BLOCK_SIZE, FlashImageError, "invalid file path"),
        ({"/lib/": b""}, 8 * BLOCK_SIZE, FlashImageError, "invalid file path"),
        ({"/a": b"", "a": b""}, 8 * BLOCK_SIZE, FlashImageError, "given twice"),
        ({"/lib": b"", "/lib/x.py": b""}, 8 * BLOCK_SIZE, FlashImageError, "both a file and"),
        ({"/a.py": "text"}, 8 * BLOCK_SIZE, TypeError, "must be bytes"),
    ],
)
def test_build_vfs_errors(files: dict, size: int, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build_vfs(files, size)


_names = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="/"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))


@settings(derandomize=True, deadline=None, max_examples=30)
@given(
    st.dictionaries(
        st.lists(_names, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
        st.binary(max_size=3000),
        max_size=8,
    )
)
def test_build_vfs_round_trip_random_trees(files: dict[str, bytes]) -> None:
    paths = sorted(files)
    # A path cannot be both a file and a directory.
    if any(b.startswith(a + "/") for a in paths for b in paths):
        with pytest.raises(FlashImageError, match="both a file and"):
            build_vfs(files, 64 * BLOCK_SIZE)
    else:
        assert vfs_files(build_vfs(files, 64 * BLOCK_SIZE)) == files


def test_write_vfs_then_read_vfs(tmp_path: Path) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    before = path.read_bytes()
    write_vfs(path, SAMPLE_FILES)
    after = path.read_bytes()
    assert len(after) == len(before)
    assert after[: VFS.offset] == before[: VFS.offset]
    assert after[VFS.end :] == before[VFS.end :]
    assert after[VFS.offset : VFS.end] == build_vfs(SAMPLE_FILES, VFS.size)
    assert read_vfs(path) == SAMPLE_FILES
    write_vfs(path, {"/only.py": b"1"})  # replaces, not merges
    assert read_vfs(path) == {"/only.py": b"1"}


def test_write_vfs_other_partition(tmp_path: Path) -> None:
    layout = [*MICROPYTHON_ESP32_4MB[:3], Partition("vfs", 1, 0x81, 0x200000, 0x100000),
              Partition("user", 1, 0x83, 0x300000, 0x100000)]
    path = create_flash_image(tmp_path / "flash.bin", layout)
    write_vfs(path, {"/u.txt": b"u"}, name="user")
    assert read_vfs(path, "user") == {"/u.txt": b"u"}
    with pytest.raises(FlashImageError, match="vfs partition is blank"):
        read_vfs(path)


def test_read_vfs_blank(tmp_path: Path) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    with pytest.raises(FlashImageError, match=r"^vfs partition is blank \(never formatted\)$"):
        read_vfs(path)


def test_read_vfs_not_littlefs(tmp_path: Path) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    with open(path, "r+b") as f:
        f.seek(VFS.offset)
        f.write(b"\x00" * 2 * BLOCK_SIZE)  # e.g. a wiped or FAT-formatted partition
    with pytest.raises(FlashImageError, match="does not contain a LittleFS v2 filesystem"):
        read_vfs(path)


def test_read_vfs_geometry_mismatch() -> None:
    small = build_vfs({"/a": b"a"}, 16 * BLOCK_SIZE)
    with pytest.raises(FlashImageError, match="LittleFS superblock but cannot be mounted"):
        vfs_files(small + b"\xff" * 16 * BLOCK_SIZE)


def test_read_vfs_missing_partition_and_truncated_image(tmp_path: Path) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    with pytest.raises(FlashImageError, match="no partition named 'storage'"):
        read_vfs(path, "storage")
    write_vfs(path, {"/a": b"a"})
    with open(path, "r+b") as f:
        f.truncate(VFS.offset + 0x1000)
    with pytest.raises(FlashImageError):
        read_vfs(path)


# --- interop with real MicroPython ------------------------------------------

# Runs inside MicroPython.  FileFlash mimics esp32.Partition: the extended
# block protocol (readblocks/writeblocks with a byte offset, erase via ioctl 6)
# that VfsLfs2 uses, over a region of the image file.
MP_HELPER = r"""
import sys, os, vfs, json
from binascii import hexlify, unhexlify

BLOCK = 4096

class FileFlash:
    def __init__(self, path, offset, size):
        self.f = open(path, "r+b")
        self.offset = offset
        self.count = size // BLOCK

    def _seek(self, block, off):
        self.f.seek(self.offset + block * BLOCK + off)

    def readblocks(self, block, buf, off=0):
        self._seek(block, off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        if off is None:  # simple protocol: whole blocks, erase implied
            for i in range(len(buf) // BLOCK):
                self.ioctl(6, block + i)
            off = 0
        self._seek(block, off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 5:
            return BLOCK
        if op == 6:
            self._seek(arg, 0)
            self.f.write(b"\xff" * BLOCK)
            return 0
        if op == 3:
            self.f.flush()
            return 0
        if op in (1, 2):
            return 0
        return None

def walk(top, rel=""):
    out = {}
    for entry in os.ilistdir(top + rel if rel else top):
        name, kind = entry[0], entry[1]
        path = rel + "/" + name
        if kind == 0x4000:
            out.update(walk(top, path))
        else:
            with open(top + path, "rb") as f:
                out[path] = hexlify(f.read()).decode()
    return out

def makedirs(path):
    cur = ""
    for part in path.split("/")[1:-1]:
        cur += "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass

mode, image, offset, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dev = FileFlash(image, offset, size)
if mode == "mkfs":
    vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/flash")
if mode in ("mkfs", "add"):
    with open(sys.argv[5]) as f:
        files = json.load(f)
    for path, data in files.items():
        makedirs("/flash" + path)
        with open("/flash" + path, "wb") as f:
            f.write(unhexlify(data))
listing = walk("/flash")
vfs.umount("/flash")
dev.f.close()
print(json.dumps(listing))
"""


def _find_micropython() -> str | None:
    for candidate in (
        Path(sys.executable).with_name("micropython"),
        REPO / ".venv" / "bin" / "micropython",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("micropython")


@pytest.fixture
def micropython(tmp_path: Path):
    exe = _find_micropython()
    if exe is None:
        pytest.skip("MicroPython Unix port not found (install the project's .venv)")
    script = tmp_path / "mp_flash_helper.py"
    script.write_text(MP_HELPER)

    def run(mode: str, image: Path, part: Partition, files: dict[str, bytes] | None = None):
        args = [exe, str(script), mode, str(image), str(part.offset), str(part.size)]
        if files is not None:
            spec = tmp_path / "files.json"
            spec.write_text(json.dumps({k: v.hex() for k, v in files.items()}))
            args.append(str(spec))
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"MicroPython failed:\n{proc.stdout}\n{proc.stderr}"
        listing = json.loads(proc.stdout.strip().splitlines()[-1])
        return {k: bytes.fromhex(v) for k, v in listing.items()}

    return run


def test_micropython_mounts_host_built_vfs(tmp_path: Path, micropython) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    write_vfs(path, SAMPLE_FILES)
    assert micropython("read", path, VFS) == SAMPLE_FILES
    # MicroPython can also write to it, and the host sees both old and new files.
    extra = {"/log.txt": b"written on the board\n", "/lib/pkg/mod.py": b"X = 1\n"}
    assert micropython("add", path, VFS, extra) == SAMPLE_FILES | extra
    assert read_vfs(path) == SAMPLE_FILES | extra


def test_host_reads_micropython_formatted_vfs(tmp_path: Path, micropython) -> None:
    path = create_flash_image(tmp_path / "flash.bin")
    before = path.read_bytes()
    files = {
        "/boot.py": b"import machine\n",
        "/lib/sensors/imu.py": b"def read():\n    return (0, 0, 9.81)\n",
        "/big.bin": bytes(i * 7 % 251 for i in range(20_000)),
    }
    assert micropython("mkfs", path, VFS, files) == files
    after = path.read_bytes()
    assert after[: VFS.offset] == before[: VFS.offset]  # MicroPython stayed inside its partition
    assert read_vfs(path) == files
