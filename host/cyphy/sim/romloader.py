"""The sim board's serial download mode: ESP32's ROM loader and esptool's flasher stub.

An ESP32 reset with GPIO0 held low runs the ROM's UART download mode instead of the app:
it prints a boot banner ending in ``waiting for download`` and then answers the serial
protocol that esptool speaks. The sim has no Xtensa CPU to run the ROM on, nor the flasher
stub esptool uploads into RAM, so this module answers the protocol the way both of them
do, on the node's flash image (``flash.bin``). The supervisor runs it on the node's PTY
instead of the MicroPython process (``cyphy sim start NAME --download``).

The protocol is the one documented in esptool's "Serial Protocol" page
(docs/en/advanced-topics/serial-protocol.rst, "SP" below):

* SLIP framing both ways: a packet is ``C0 ... C0`` with ``C0``/``DB`` escaped as
  ``DB DC``/``DB DD`` (SP "Low Level Protocol").
* Command: ``00 op size16 checksum32 data``; the checksum (``0xEF`` xor every byte) covers
  only the payload of MEM_DATA, FLASH_DATA and FLASH_DEFL_DATA (SP "Checksum").
* Response: ``01 op size16 value32 data``, the data ending in status bytes: the ESP32 ROM
  sends 4 (``status, error, 0, 0``, status 1 on failure, error from the "ROM Loader
  Errors" list), the stub 2 (``error, 0`` with its own ``0xC*`` codes, ``0xFF`` for an
  unimplemented command) (SP "Status bytes").
* SYNC gets eight responses; the ROM's have a non-zero value, the stub's value 0, which is
  how esptool tells them apart (SP "Initial Synchronisation", the stub's sources).
* MEM_BEGIN/DATA/END upload the stub; MEM_END with an entry point "runs" it, after which
  it sends the unsolicited packet ``OHAI`` and answers from then on.
* The stub's READ_FLASH streams raw data packets, each acknowledged by the host with the
  total received so far, then a raw 16-byte MD5 (SP "Reading Flash").

Registers esptool reads (READ_REG) or drives (WRITE_REG) are modelled as far as esptool
uses them on an ESP32 (its ``targets/esp32.py``): the chip-detect magic word, the eFuse
words with the MAC and chip revision, the UART clock divider and RTC calibration (crystal
frequency), and the SPI controller's user-command registers, through which esptool sends
JEDEC commands to the flash chip (RDID, status reads, SFDP).
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
import termios
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- SLIP

END, ESC, ESC_END, ESC_ESC = b"\xc0", b"\xdb", b"\xdb\xdc", b"\xdb\xdd"
MAX_FRAME = 2 * (0x4000 + 64)  # the stub's largest command (a 16 KiB block), fully escaped


def slip_encode(packet: bytes) -> bytes:
    return END + packet.replace(ESC, ESC_ESC).replace(END, ESC_END) + END


class SlipReader:
    """Splits the host's byte stream into SLIP frames. Bytes between frames (a terminal's
    stray Enter) come out as frames too; they are not valid packets and get ignored."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        if END not in data:
            self.buf += data
            if len(self.buf) > MAX_FRAME:  # a frame that never ends is line noise
                del self.buf[:-MAX_FRAME]
            return []
        first, *frames, rest = data.split(END)
        frames.insert(0, bytes(self.buf) + first)
        self.buf = bytearray(rest)
        # In valid SLIP every DB starts an escape, so plain replaces decode it.
        return [f.replace(ESC_END, END).replace(ESC_ESC, ESC) for f in frames if f]


# --------------------------------------------------------------------------- protocol constants


class Op(enum.IntEnum):
    """Command opcodes (SP "Commands"; the 0xD* ones only the stub knows)."""

    FLASH_BEGIN = 0x02
    FLASH_DATA = 0x03
    FLASH_END = 0x04
    MEM_BEGIN = 0x05
    MEM_END = 0x06
    MEM_DATA = 0x07
    SYNC = 0x08
    WRITE_REG = 0x09
    READ_REG = 0x0A
    SPI_SET_PARAMS = 0x0B
    SPI_ATTACH = 0x0D
    READ_FLASH_SLOW = 0x0E
    CHANGE_BAUDRATE = 0x0F
    FLASH_DEFL_BEGIN = 0x10
    FLASH_DEFL_DATA = 0x11
    FLASH_DEFL_END = 0x12
    SPI_FLASH_MD5 = 0x13
    GET_SECURITY_INFO = 0x14  # ESP32-S2 and later; the ESP32 ROM rejects it
    ERASE_FLASH = 0xD0
    ERASE_REGION = 0xD1
    READ_FLASH = 0xD2
    RUN_USER_CODE = 0xD3


ROM_OPS = {Op.FLASH_BEGIN, Op.FLASH_DATA, Op.FLASH_END, Op.MEM_BEGIN, Op.MEM_END, Op.MEM_DATA,
           Op.SYNC, Op.WRITE_REG, Op.READ_REG, Op.SPI_SET_PARAMS, Op.SPI_ATTACH,
           Op.READ_FLASH_SLOW, Op.CHANGE_BAUDRATE, Op.FLASH_DEFL_BEGIN, Op.FLASH_DEFL_DATA,
           Op.FLASH_DEFL_END, Op.SPI_FLASH_MD5}
STUB_OPS = (ROM_OPS - {Op.READ_FLASH_SLOW}) | {Op.ERASE_FLASH, Op.ERASE_REGION, Op.READ_FLASH,
                                               Op.RUN_USER_CODE}


class Fail(enum.Enum):
    """A failed command: (ROM error code, stub error code). ROM codes: SP "ROM Loader
    Errors"; stub codes: esptool's flasher_stub/include/stub_flasher.h."""

    BAD_LEN = (0x05, 0xC0)  # "received message is invalid" / ESP_BAD_DATA_LEN
    BAD_CHECKSUM = (0x07, 0xC1)  # "invalid CRC in message" / ESP_BAD_DATA_CHECKSUM
    BAD_BLOCKSIZE = (0x05, 0xC2)
    FLASH_OP = (0x06, 0xC4)  # "failed to act on received message" / ESP_FAILED_SPI_OP
    NOT_IN_FLASH_MODE = (0x06, 0xC6)
    INFLATE = (0x0B, 0xC7)  # "deflate error" / ESP_INFLATE_ERROR
    NOT_ENOUGH_DATA = (0x06, 0xC8)
    TOO_MUCH_DATA = (0x06, 0xC9)
    READ_LENGTH = (0x0A, 0xC0)  # "flash read length error"
    UNSUPPORTED = (0x05, 0xFF)  # unknown command / ESP_CMD_NOT_IMPLEMENTED


class LoaderError(Exception):
    def __init__(self, fail: Fail) -> None:
        super().__init__(fail.name)
        self.fail = fail


SYNC_DATA = b"\x07\x07\x12\x20" + 32 * b"\x55"
ROM_SYNC_VALUE = 0x55201207  # what an ESP32 ROM puts in its SYNC responses (SP "Tracing")
OHAI = b"OHAI"  # the stub's greeting, its only unsolicited packet
STUB_MAX_BLOCK = 0x4000  # the stub's largest write block (esptool: FLASH_WRITE_SIZE 0x4000)
ROM_READ_BLOCK = 64  # READ_FLASH_SLOW returns at most 64 bytes per command
ROM_BAUD = 115200  # ESP32's ROM starts its UART at 115200 (SP "Initial Synchronisation")

DOWNLOAD_BOOT = "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
RESETS = {"power": "rst:0x1 (POWERON_RESET)", "software": "rst:0x3 (SW_RESET)"}


# ESP32-S3 and C3 ROMs print their build, then rst/boot in their own words (from their
# boot logs; not yet compared with hardware here).
_NEW_ROMS = {
    "esp32s3": ("ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n", "boot:0x0 (DOWNLOAD(USB/UART0))"),
    "esp32c3": ("ESP-ROM:esp32c3-api1-20210207\r\nBuild:Feb  7 2021\r\n", "boot:0x5 (DOWNLOAD(USB/UART0/1))"),
}
_NEW_RESETS = {"power": "rst:0x1 (POWERON)", "software": "rst:0x3 (RTC_SW_SYS_RST)"}


def banner(reset: str = "power", chip: str = "esp32") -> bytes:
    """What the chip's ROM prints on entering download mode (GPIO0, or GPIO9 on a C3, low
    at reset)."""
    if chip in _NEW_ROMS:
        head, boot = _NEW_ROMS[chip]
        return f"{head}{_NEW_RESETS[reset]},{boot}\r\nwaiting for download\r\n".encode()
    return (f"ets Jun  8 2016 00:22:57\r\n\r\n{RESETS[reset]},{DOWNLOAD_BOOT}\r\n"
            "waiting for download\r\n").encode()


def checksum(data: bytes) -> int:
    """SP "Checksum": 0xEF xor every byte of the data to write."""
    c = 0xEF
    for b in data:  # at most 16 KiB per packet
        c ^= b
    return c


def port_baud(fd: int) -> int | None:
    """The rate the host set on its end of the PTY (Linux reports the slave's termios on the
    master): what the ROM's autobaud would measure from the SYNC packet."""
    try:
        speed = termios.tcgetattr(fd)[5]
    except (termios.error, OSError):
        return None
    return _SPEEDS.get(speed)


_SPEEDS = {getattr(termios, f"B{n}"): n for n in (
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000,
    921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000)
    if hasattr(termios, f"B{n}")}


# --------------------------------------------------------------------------- the flash chip


class FlashChip:
    """The node's 4 MB SPI NOR flash: its image file. As on the chip, erasing sets whole
    4 KiB sectors to 0xFF and programming can only clear bits (flash = flash & data), so
    the 0xFF padding esptool adds to a last block never changes anything."""

    SECTOR = 0x1000

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size

    def check(self, addr: int, n: int) -> None:
        if addr < 0 or n < 0 or addr + n > self.size:
            raise LoaderError(Fail.FLASH_OP)

    def read(self, addr: int, n: int) -> bytes:
        self.check(addr, n)
        return os.pread(self.fd, n, addr)

    def erase(self, addr: int, n: int) -> None:
        """Erase the sectors that [addr, addr + n) touches."""
        if n <= 0:
            return
        start = addr - addr % self.SECTOR
        end = -(-(addr + n) // self.SECTOR) * self.SECTOR
        self.check(start, end - start)
        os.pwrite(self.fd, b"\xff" * (end - start), start)

    def program(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        old = int.from_bytes(os.pread(self.fd, len(data), addr), "little")
        new = old & int.from_bytes(data, "little")
        os.pwrite(self.fd, new.to_bytes(len(data), "little"), addr)

    def md5(self, addr: int, n: int) -> bytes:
        self.check(addr, n)
        h = hashlib.md5()
        for pos in range(addr, addr + n, 1 << 20):
            h.update(os.pread(self.fd, min(1 << 20, addr + n - pos), pos))
        return h.digest()

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


# The flash chip's answers to JEDEC commands: a Winbond W25Q32 (4 MB), as on many
# ESP32-WROOM modules. RDID = manufacturer 0xEF, memory type 0x40, capacity 0x16 (2**22).
FLASH_RDID = bytes((0xEF, 0x40, 0x16))
# SFDP (JESD216): signature, revision 1.6, one parameter header pointing at the basic
# table at 0x80, whose second word is the density in bits minus one.
SFDP = bytearray(b"\xff" * 0x100)
SFDP[0:16] = b"SFDP\x06\x01\x00\xff\x00\x06\x01\x10\x80\x00\x00\xff"
SFDP[0x80:0x88] = struct.pack("<II", 0xFFF920E5, 32 * 1024 * 1024 - 1)


# --------------------------------------------------------------------------- ESP32 registers

MAGIC_REG = 0x40001000  # CHIP_DETECT_MAGIC_REG_ADDR: a ROM word that differs per chip
ESP32_MAGIC = 0x00F01D83
EFUSE_BASE = 0x3FF5A000  # EFUSE_BLK0_RDATA0_REG; word n at +4n
UART_CLKDIV_REG = 0x3FF40014
APB_CTL_DATE_REG = 0x3FF6607C
RTC_CALI_REG = 0x3FF5F06C  # RTCCALICFG1
GPIO_STRAP_REG = 0x3FF44038
SPI_BASE = 0x3FF42000  # SPI1, the flash's controller; esptool's SPI_REG_BASE
SPI_CMD, SPI_ADDR, SPI_USR, SPI_USR1, SPI_USR2, SPI_MISO_DLEN, SPI_W0 = (
    SPI_BASE + 0x00, SPI_BASE + 0x04, SPI_BASE + 0x1C, SPI_BASE + 0x20, SPI_BASE + 0x24,
    SPI_BASE + 0x2C, SPI_BASE + 0x80)
SPI_CMD_USR = 1 << 18
SPI_USR_ADDR, SPI_USR_MISO = 1 << 30, 1 << 28

XTAL_HZ = 40_000_000
CK8M_EFUSE = 50  # EFUSE_RD_CK8M_FREQ; with RTC_CALI below the ROM computes exactly 40 MHz,
RTC_CALI = XTAL_HZ * 40 // (15625 * CK8M_EFUSE)  # so a ROM CHANGE_BAUDRATE carries the rate as-is


def mac_crc8(mac: bytes) -> int:
    """eFuse MAC_CRC: CRC-8, reflected polynomial 0x8C, initial value 0 (ROM esp_crc8)."""
    crc = 0
    for b in mac:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


class Esp32Registers:
    """The registers esptool touches, for an ESP32-D0WD-V3 revision v3.0 (ESP32-WROOM-32E)."""

    chip = "esp32"
    # esptool targets/esp32.py: SPI_REG_BASE and the user-command register offsets
    SPI = {"base": SPI_BASE, "usr": 0x1C, "usr1": 0x20, "usr2": 0x24, "miso_dlen": 0x2C, "w0": 0x80}
    UART_CLKDIV = UART_CLKDIV_REG

    def __init__(self, mac: bytes, uart_baud: Callable[[], int]) -> None:
        self.uart_baud = uart_baud
        self._spi()
        efuse = [0] * 32
        # BLK0 word 1: MAC bytes 2..5; word 2: CRC in bits 16..23, MAC bytes 0..1 below it
        # (esptool's ESP32ROM.read_mac packs words 2 and 1 big-endian and drops 2 bytes).
        efuse[1] = int.from_bytes(mac[2:6], "big")
        efuse[2] = mac_crc8(mac) << 16 | int.from_bytes(mac[0:2], "big")
        # word 3: CHIP_VER_REV1 (bit 15), CPU rated 240 MHz (bit 13), package D0WD (1 << 9)
        efuse[3] = 1 << 15 | 1 << 13 | 1 << 9
        efuse[4] = 0x0C << 8 | CK8M_EFUSE  # ADC Vref calibration, 8 MHz clock calibration
        efuse[5] = 1 << 20  # CHIP_VER_REV2; minor revision 0
        self.mem: dict[int, int] = {EFUSE_BASE + 4 * i: v for i, v in enumerate(efuse)}
        self.mem.update({
            MAGIC_REG: ESP32_MAGIC,
            APB_CTL_DATE_REG: 1 << 31 | 0x16042000,  # bit 31: revision 3
            RTC_CALI_REG: RTC_CALI << 7,
            GPIO_STRAP_REG: 0x03,  # GPIO0 low: what the banner's boot:0x3 shows
        })

    def _spi(self) -> None:
        b = self.SPI["base"]
        self.spi_cmd, self.spi_addr = b, b + 0x04
        self.spi_usr, self.spi_usr1, self.spi_usr2 = b + self.SPI["usr"], b + self.SPI["usr1"], b + self.SPI["usr2"]
        self.spi_miso_dlen, self.spi_w0 = b + self.SPI["miso_dlen"], b + self.SPI["w0"]

    def read(self, addr: int) -> int:
        if addr == self.UART_CLKDIV:  # the UART clock (the crystal) divided by the line rate
            return XTAL_HZ // max(self.uart_baud(), 1) & 0xFFFFF
        return self.mem.get(addr, 0)

    def write(self, addr: int, value: int, mask: int) -> None:
        self.mem[addr] = (self.mem.get(addr, 0) & ~mask | value & mask) & 0xFFFFFFFF
        if addr == self.spi_cmd and self.mem[addr] & SPI_CMD_USR:
            self._spi_user_command()
            self.mem[addr] &= ~SPI_CMD_USR  # done at once: esptool polls for this bit

    def _spi_user_command(self) -> None:
        """Run the flash command set up in the SPI user registers (esptool's
        run_spiflash_command) and leave what the chip answered in W0..."""
        usr = self.mem.get(self.spi_usr, 0)
        command = self.mem.get(self.spi_usr2, 0) & 0xFF
        addr = 0
        if usr & SPI_USR_ADDR:
            addr_bits = (self.mem.get(self.spi_usr1, 0) >> 26 & 0x3F) + 1
            addr = self.mem.get(self.spi_addr, 0) >> (32 - addr_bits)
        if not usr & SPI_USR_MISO:
            return
        nbytes = (self.mem.get(self.spi_miso_dlen, 0) + 1 + 7) // 8
        if command == 0x9F:  # RDID
            answer = FLASH_RDID.ljust(nbytes, b"\x00")
        elif command == 0x5A:  # RDSFDP
            answer = bytes(SFDP[addr:addr + nbytes]).ljust(nbytes, b"\xff")
        else:  # status registers (RDSR 05/35/15) and anything else read as zero
            answer = bytes(nbytes)
        answer = answer.ljust(-(-nbytes // 4) * 4, b"\x00")  # whole W0.. words
        for i in range(0, len(answer), 4):
            self.mem[self.spi_w0 + i] = int.from_bytes(answer[i:i + 4], "little")


class Esp32S3Registers(Esp32Registers):
    """An ESP32-S3 (QFN56) revision v0.2, as esptool's targets/esp32s3.py reads it: the MAC
    in eFuse BLOCK1 (EFUSE_BASE + 0x44: bytes 2..5, then 0..1 in the next word's low half),
    the revision and package in BLOCK1 word 3 (minor bits 18..20, package 21..23), the
    40 MHz crystal (fixed on this chip), SPI1 at 0x60002000 with the newer offsets."""

    chip = "esp32s3"
    EFUSE = 0x60007000
    SPI = {"base": 0x60002000, "usr": 0x18, "usr1": 0x1C, "usr2": 0x20, "miso_dlen": 0x28, "w0": 0x58}
    UART_CLKDIV = 0x60000014
    MINOR_REV = 2

    def __init__(self, mac: bytes, uart_baud: Callable[[], int]) -> None:
        self.uart_baud = uart_baud
        self._spi()
        blk1 = self.EFUSE + 0x44
        self.mem: dict[int, int] = {
            blk1: int.from_bytes(mac[2:6], "big"),
            blk1 + 4: int.from_bytes(mac[0:2], "big"),
            blk1 + 12: self.MINOR_REV << 18,  # package 0, minor revision
        }


class Esp32C3Registers(Esp32S3Registers):
    """An ESP32-C3 (QFN32) revision v0.4 (esptool targets/esp32c3.py: eFuse at 0x60008800)."""

    chip = "esp32c3"
    EFUSE = 0x60008800
    MINOR_REV = 4


REGISTERS = {"esp32": Esp32Registers, "esp32s3": Esp32S3Registers, "esp32c3": Esp32C3Registers}
# esptool targets/esp32s3.py, esp32c3.py: IMAGE_CHIP_ID, what GET_SECURITY_INFO reports
CHIP_IDS = {"esp32s3": 9, "esp32c3": 5}


# --------------------------------------------------------------------------- loader state


@dataclass
class After:
    """What the chip does once a response has left the UART: change the line rate
    (CHANGE_BAUDRATE), reset into download mode again (FLASH_END "reboot": the boot strap
    pins are latched at power-on, so a software reset stays in the loader) or run the app."""

    kind: str  # "baud" | "reset" | "run"
    baud: int = 0


@dataclass
class WriteSession:
    """Between FLASH_(DEFL_)BEGIN and the last data block."""

    offset: int
    limit: int  # bytes that may be programmed
    compressed: bool
    written: int = 0
    inflater: Any = field(default_factory=zlib.decompressobj)  # zlib's Decompress


@dataclass
class ReadStream:
    """The stub's READ_FLASH: data packets out, cumulative byte counts back."""

    offset: int
    length: int
    packet: int
    window: int  # max unacknowledged packets
    sent: int = 0
    acked: int = 0
    md5: Any = field(default_factory=hashlib.md5)


class RomLoader:
    """ESP32's download mode on a flash image: feed() it host bytes, it returns the bytes
    the chip sends back. After a response that changes the UART or leaves the loader,
    ``after`` says what to do once the bytes returned so far have been sent."""

    def __init__(self, image: Path, mac: bytes, baud: int = ROM_BAUD,
                 host_baud: Callable[[], int | None] = lambda: None,
                 log: Callable[[str], None] = lambda msg: None, chip: str = "esp32") -> None:
        self.flash = FlashChip(image)
        self.chip = chip
        self.regs = REGISTERS[chip](mac, lambda: self.baud)
        self.host_baud = host_baud
        self.log = log
        self.initial_baud = baud
        self.reset()

    def reset(self) -> None:
        """A chip reset: back to the ROM loader (the stub was in RAM) at the ROM's rate."""
        self.stub = False
        self.baud = self.initial_baud
        self.after: After | None = None
        self.slip = SlipReader()
        self.writing: WriteSession | None = None
        self.reading: ReadStream | None = None
        self.mem_upload = 0  # bytes of RAM download received (the stub, in practice)
        self.stub_entry = 0  # set by MEM_END: the stub runs once its reply has gone

    def close(self) -> None:
        self.flash.close()

    def act(self) -> After | None:
        """Call once the bytes feed() returned have left the UART: carries out the pending
        After (the new line rate, the reset) and returns it for the supervisor's part."""
        after, self.after = self.after, None
        if after is not None and after.kind == "baud":
            self.baud = after.baud
            self.log(f"download mode: line rate {after.baud}")
        elif after is not None and after.kind == "reset":
            self.reset()
            self.log("download mode: software reset, back to the ROM loader")
        return after

    # ------------------------------------------------------------------ framing
    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for frame in self.slip.feed(data):
            if self.after is not None:  # e.g. bytes sent while the chip resets: lost
                break
            if self.reading is not None and len(frame) == 4:
                out += self._read_ack(frame)
            else:
                self.reading = None  # anything but an ack ends a READ_FLASH stream
                out += self._command(frame)
        return bytes(out)

    def _command(self, pkt: bytes) -> bytes:
        if len(pkt) < 8 or pkt[0] != 0x00:
            return b""  # not a command (line noise): ignored
        op, size, chk = struct.unpack_from("<BHI", pkt, 1)
        data = pkt[8:]
        try:
            if size != len(data):
                raise LoaderError(Fail.BAD_LEN)
            handler = self._handler(op)
            if op == Op.RUN_USER_CODE:  # the stub jumps to the app without answering
                handler(data, chk)
                return b""
            value, payload = handler(data, chk)
        except LoaderError as e:
            return self._reply(op, fail=e.fail)
        if op == Op.SYNC:
            return self._reply(op, value, payload) * 8
        reply = self._reply(op, value, payload)
        if op == Op.READ_FLASH and self.reading is not None:
            reply += self._read_packets()
        if self.stub_entry:  # the stub starts: it greets, then answers from now on
            self.stub, self.stub_entry = True, 0
            reply += slip_encode(OHAI)
        return reply

    def _reply(self, op: int, value: int = 0, payload: bytes = b"", fail: Fail | None = None) -> bytes:
        if self.stub:
            status = bytes((fail.value[1], 0)) if fail else b"\x00\x00"
        else:
            status = bytes((1, fail.value[0], 0, 0)) if fail else b"\x00" * 4
        body = payload + status
        return slip_encode(struct.pack("<BBHI", 0x01, op, len(body), value) + body)

    def _handler(self, op: int) -> Callable[[bytes, int], tuple[int, bytes]]:
        known = STUB_OPS if self.stub else ROM_OPS
        if op == Op.GET_SECURITY_INFO and self.chip in CHIP_IDS:
            return self._cmd_get_security_info  # ESP32-S3 and later answer it (ROM and stub)
        if op not in known:
            raise LoaderError(Fail.UNSUPPORTED)
        return getattr(self, "_cmd_" + Op(op).name.lower())

    @staticmethod
    def _words(data: bytes, n: int, *, exact: bool = True) -> tuple[int, ...]:
        if len(data) < 4 * n or (exact and len(data) != 4 * n):
            raise LoaderError(Fail.BAD_LEN)
        return struct.unpack_from(f"<{n}I", data)

    def _cmd_get_security_info(self, data: bytes, chk: int) -> tuple[int, bytes]:
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version (esptool
        # ESPLoader.get_security_info): nothing secured, the chip's IMAGE_CHIP_ID
        return 0, struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, CHIP_IDS[self.chip], 1)

    # ------------------------------------------------------------------ link and registers
    def _cmd_sync(self, data: bytes, chk: int) -> tuple[int, bytes]:
        if data != SYNC_DATA:
            raise LoaderError(Fail.BAD_LEN)
        if not self.stub:  # the ROM's autobaud measures the rate from the 0x55 bytes
            self.baud = self.host_baud() or self.baud
            return ROM_SYNC_VALUE, b""
        return 0, b""

    def _cmd_read_reg(self, data: bytes, chk: int) -> tuple[int, bytes]:
        (addr,) = self._words(data, 1)
        return self.regs.read(addr), b""

    def _cmd_write_reg(self, data: bytes, chk: int) -> tuple[int, bytes]:
        if not data or len(data) % 16:
            raise LoaderError(Fail.BAD_LEN)
        for addr, value, mask, _delay_us in struct.iter_unpack("<4I", data):
            self.regs.write(addr, value, mask)
        return 0, b""

    def _cmd_spi_set_params(self, data: bytes, chk: int) -> tuple[int, bytes]:
        self._words(data, 6)  # id, total size, block, sector, page size, status mask
        return 0, b""

    def _cmd_spi_attach(self, data: bytes, chk: int) -> tuple[int, bytes]:
        self._words(data, 1 if self.stub else 2)  # the ROM takes an extra "is legacy" word
        return 0, b""

    def _cmd_change_baudrate(self, data: bytes, chk: int) -> tuple[int, bytes]:
        new, _old = self._words(data, 2)  # old: 0 for the ROM, the current rate for the stub
        if new <= 0:
            raise LoaderError(Fail.BAD_LEN)
        self.after = After("baud", new)
        return 0, b""

    # ------------------------------------------------------------------ RAM download (the stub)
    def _cmd_mem_begin(self, data: bytes, chk: int) -> tuple[int, bytes]:
        size, _blocks, _block_size, offset = self._words(data, 4)
        self.log(f"download mode: RAM download of {size} bytes at {offset:#010x}")
        return 0, b""

    def _cmd_mem_data(self, data: bytes, chk: int) -> tuple[int, bytes]:
        block = self._data_block(data, chk)
        self.mem_upload += len(block)
        return 0, b""

    def _cmd_mem_end(self, data: bytes, chk: int) -> tuple[int, bytes]:
        _no_exec, entry = self._words(data, 2)
        if entry and not self.stub:
            # Nothing can execute the uploaded code: whatever was loaded is taken to be
            # esptool's flasher stub, which from now on answers (after its OHAI).
            self.stub_entry = entry
            self.log(f"download mode: flasher stub started ({self.mem_upload} bytes, "
                     f"entry {entry:#010x})")
        self.mem_upload = 0
        return 0, b""

    def _data_block(self, data: bytes, chk: int) -> bytes:
        """The payload of a *_DATA command: length, sequence number, 0, 0, then the bytes."""
        length, _seq, _, _ = self._words(data, 4, exact=False)
        block = data[16:]
        if length != len(block):
            raise LoaderError(Fail.BAD_LEN)
        if checksum(block) != chk & 0xFF:
            raise LoaderError(Fail.BAD_CHECKSUM)
        return block

    # ------------------------------------------------------------------ flash writes
    def _begin_write(self, data: bytes, compressed: bool) -> None:
        # ROM and stub: size, number of blocks, block size, offset; the stub (and chips
        # after the ESP32) add an "encrypted" word. The ROM erases up front, the stub as it
        # writes; both erase the sectors the write touches (SP "Writing Data").
        size, blocks, block_size, offset = self._words(data, 4, exact=False)
        if len(data) not in (16, 20):
            raise LoaderError(Fail.BAD_LEN)
        if self.stub and block_size > STUB_MAX_BLOCK:
            raise LoaderError(Fail.BAD_BLOCKSIZE)
        self.flash.erase(offset, size)
        # The stub writes exactly `size` bytes (it trims a last block's padding); the ROM
        # programs whole blocks (FLASH_DATA) or up to the rounded-up size (compressed).
        limit = size if self.stub or compressed else blocks * block_size
        self.writing = WriteSession(offset, limit, compressed)
        if size:
            kind = "compressed " if compressed else ""
            self.log(f"download mode: {kind}write of {size} bytes at {offset:#x}")

    def _program(self, block: bytes) -> None:
        w = self.writing
        assert w is not None
        room = w.limit - w.written
        if len(block) > room:
            if not self.stub and not w.compressed:
                raise LoaderError(Fail.TOO_MUCH_DATA)
            block = block[:room]
        self.flash.program(w.offset + w.written, block)
        w.written += len(block)

    def _cmd_flash_begin(self, data: bytes, chk: int) -> tuple[int, bytes]:
        self._begin_write(data, compressed=False)
        return 0, b""

    def _cmd_flash_defl_begin(self, data: bytes, chk: int) -> tuple[int, bytes]:
        self._begin_write(data, compressed=True)
        return 0, b""

    def _cmd_flash_data(self, data: bytes, chk: int) -> tuple[int, bytes]:
        if self.writing is None or self.writing.compressed:
            raise LoaderError(Fail.NOT_IN_FLASH_MODE)
        self._program(self._data_block(data, chk))
        return 0, b""

    def _cmd_flash_defl_data(self, data: bytes, chk: int) -> tuple[int, bytes]:
        w = self.writing
        if w is None or not w.compressed:
            raise LoaderError(Fail.NOT_IN_FLASH_MODE)
        block = self._data_block(data, chk)
        try:
            plain = w.inflater.decompress(block)
        except zlib.error:
            raise LoaderError(Fail.INFLATE) from None
        if len(plain) > w.limit - w.written and self.stub:
            raise LoaderError(Fail.TOO_MUCH_DATA)
        self._program(plain)
        return 0, b""

    def _cmd_flash_end(self, data: bytes, chk: int) -> tuple[int, bytes]:
        (run_user_code,) = self._words(data, 1)
        w, self.writing = self.writing, None
        if self.stub:
            if w is None:
                raise LoaderError(Fail.NOT_IN_FLASH_MODE)
            if w.written < w.limit:
                raise LoaderError(Fail.NOT_ENOUGH_DATA)
        if not run_user_code:
            self.after = After("reset")  # "reboot": a software reset, into the loader again
        elif not self.stub:
            self.after = After("run")  # the ROM jumps to the app in flash
        return 0, b""

    _cmd_flash_defl_end = _cmd_flash_end

    # ------------------------------------------------------------------ flash reads, erase, MD5
    def _cmd_spi_flash_md5(self, data: bytes, chk: int) -> tuple[int, bytes]:
        addr, size, _, _ = self._words(data, 4)
        digest = self.flash.md5(addr, size)
        # the ROM answers in 32 hex digits, the stub in 16 raw bytes (SP "Verifying")
        return 0, digest if self.stub else digest.hex().encode()

    def _cmd_read_flash_slow(self, data: bytes, chk: int) -> tuple[int, bytes]:
        addr, size = self._words(data, 2)
        if size > ROM_READ_BLOCK:
            raise LoaderError(Fail.READ_LENGTH)
        return 0, self.flash.read(addr, size).ljust(ROM_READ_BLOCK, b"\x00")

    def _cmd_read_flash(self, data: bytes, chk: int) -> tuple[int, bytes]:
        offset, length, packet, window = self._words(data, 4)
        if packet == 0 or window == 0:
            raise LoaderError(Fail.BAD_LEN)
        self.flash.check(offset, length)
        self.reading = ReadStream(offset, length, packet, window)
        self.log(f"download mode: read of {length} bytes at {offset:#x}")
        return 0, b""

    def _read_packets(self) -> bytes:
        """Data packets up to the window of unacknowledged ones."""
        r = self.reading
        assert r is not None
        out = bytearray()
        while r.sent < r.length and r.sent - r.acked < r.window * r.packet:
            chunk = self.flash.read(r.offset + r.sent, min(r.packet, r.length - r.sent))
            r.md5.update(chunk)
            r.sent += len(chunk)
            out += slip_encode(chunk)
        return bytes(out)

    def _read_ack(self, frame: bytes) -> bytes:
        r = self.reading
        assert r is not None
        r.acked = max(r.acked, struct.unpack("<I", frame)[0])
        if r.acked >= r.length:
            self.reading = None
            return slip_encode(r.md5.digest())
        return self._read_packets()

    def _cmd_erase_flash(self, data: bytes, chk: int) -> tuple[int, bytes]:
        if data:
            raise LoaderError(Fail.BAD_LEN)
        self.flash.erase(0, self.flash.size)
        self.log("download mode: erased the whole flash")
        return 0, b""

    def _cmd_erase_region(self, data: bytes, chk: int) -> tuple[int, bytes]:
        offset, size = self._words(data, 2)
        if offset % FlashChip.SECTOR or size % FlashChip.SECTOR:
            raise LoaderError(Fail.BAD_LEN)  # SP: both must be multiples of the sector size
        self.flash.erase(offset, size)
        self.log(f"download mode: erased {size} bytes at {offset:#x}")
        return 0, b""

    def _cmd_run_user_code(self, data: bytes, chk: int) -> tuple[int, bytes]:
        self.after = After("run")
        return 0, b""
