# Entry point of the sim board: what ESP32's ROM, bootloader and MicroPython's main.c do
# between reset and the REPL. Run by the supervisor as
#   micropython simboot.py image=PATH vfs_offset=N vfs_size=N mode=friendly|raw
#                          reset=power|soft|sw|wdt|panic|deepsleep uid=HEX name=NAME
#                          [ip=A.B.C.D] [ticks_start=US] [time=virtual] [bench=PATH]
# Everything is imported before the host filesystem is unmounted: after that the node
# sees only its own flash.
import sys
import os
import json
import vfs
import _link
import _board
import _repl
import _flashdev
import _clock

_RESETS = {
    # cause: (ESP32 ROM "rst:" text, machine.reset_cause() value)
    "power": ("0x1 (POWERON_RESET)", 1),
    "sw": ("0xc (SW_CPU_RESET)", 2),  # machine.reset(): HARD_RESET, as ESP32 reports it
    # machine.WDT is ESP-IDF's task watchdog with trigger_panic: a CPU reset after the
    # panic text (host/cyphy/sim/supervisor.py WDT_PANIC); reset_cause() says WDT_RESET
    "wdt": ("0xc (SW_CPU_RESET)", 3),
    "deepsleep": ("0x5 (DEEPSLEEP_RESET)", 4),
    "panic": ("0xc (SW_CPU_RESET)", 2),
    "soft": (None, 5),
}

_DEFAULT_BOOT_PY = """\
# boot.py runs on every boot, before main.py (on a soft reboot too).
# Keep it short: set up what the REPL needs; the application belongs in main.py.
"""


def _args():
    a = {}
    for kv in sys.argv[1:]:
        k, _, v = kv.partition("=")
        a[k] = v
    return a


def _mount(board, a):
    """Mount the vfs partition at / (formatting a blank one), as ESP32's _boot.py does."""
    dev = _flashdev.FlashPartition(a["image"], int(a["vfs_offset"]), int(a["vfs_size"]))
    vfs.umount("/")
    try:
        vfs.mount(vfs.VfsLfs2(dev), "/")
    except OSError:
        if not dev.is_blank():
            board.stdout.write(
                "The filesystem appears to be corrupted: it was left as it is and nothing "
                "is mounted at /.\nTo start afresh, erase the flash: on the host, cyphy sim erase %s\n" % board.node_name
            )
            return
        board.stdout.write("Performing initial setup\n")
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), "/")
        with open("/boot.py", "w") as f:
            f.write(_DEFAULT_BOOT_PY)
    os.chdir("/")


_BALLAST = []


def _as_the_chip(free, area):
    """A WROOM node (chip_free=): the heap also holds the ROM's own objects, which are C in
    the chip's flash and static RAM. Once they are made, ballast takes what is more than
    the chip leaves free, so the firmware finds `free` bytes, as on the chip; and a pinned
    block after the first `area` bytes splits the rest as the chip's heap is split into
    areas (ESP32: two of 55,968 B), so no free block is larger than one area."""
    import gc
    gc.collect()
    extra = gc.mem_free() - free
    if extra > 64:
        _BALLAST.append(bytearray(extra - 32))     # (its object header comes on top)
    if area and gc.mem_free() > area:
        first = bytearray(area - 32)
        _BALLAST.append(bytearray(1))               # the pin between the two areas
        first = None
    gc.collect()


def main(g):
    """Boot, then the REPL. g is the dict of the Unix port's __main__ module (py/runtime.c
    mp_module___main__, whose globals are MP_STATE_VM(dict_main)): boot.py, main.py and
    everything typed at the REPL run in it, as pyexec does on a board, so `import __main__`
    (micropython-lib's unittest.main()) sees what user code defined. On a board it holds
    only __name__ when the REPL starts; this file's own names are cleared from it."""
    for k in list(g.keys()):
        if k != "__name__":
            del g[k]
    g["__name__"] = "__main__"
    a = _args()
    rom_prefix = sys.argv[0].rsplit("/", 1)[0] + "/"
    clock = _clock.Clock(int(a.get("ticks_start", "0")), virtual=a.get("time") == "virtual")
    link = _link.Link(clock)
    rst_text, cause = _RESETS.get(a.get("reset", "power"), _RESETS["power"])
    uid = bytes(int(a.get("uid", "0" * 12)[i : i + 2], 16) for i in range(0, 12, 2))
    bench = None
    if a.get("bench"):  # a path: read now, while the host filesystem is still mounted
        with open(a["bench"]) as f:
            bench = json.load(f)
    board = _board.Board(link, uid, cause, a.get("name", "sim"), bench, a.get("ip") or "127.0.0.1")
    if rst_text:
        link.write_raw(
            "ets Jun  8 2016 00:22:57\r\n\r\nrst:%s,boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
            "cyphy-sim: 4MB flash, node %s\r\n" % (rst_text, board.node_name)
        )
    if a.get("cpu"):  # the speed model: the chip is cpu/1000 times slower than this host
        clock.scale_x1000 = int(a["cpu"])
        clock.slow = a.get("speed") == "chip"
    if a.get("wdt"):  # a watchdog running before a soft reset keeps running (as on ESP32)
        timeout_ms, left_ms = a["wdt"].split(":")
        board.watchdog.resume(int(timeout_ms), int(left_ms))
    _mount(board, a)
    sys.path[:] = ["", ".frozen", "/lib"]
    _board.install(board)

    repl = _repl.Repl(board, g, rom_prefix)
    if a.get("chip_free"):
        _as_the_chip(int(a["chip_free"]), int(a.get("chip_area", "0")))
    mode = a.get("mode", "friendly")
    link.event("boot")
    reboot = repl.run_file("boot.py")
    if not reboot and mode == "friendly":
        reboot = repl.run_file("main.py")
    while not reboot:
        try:
            nxt = repl.raw() if mode == "raw" else repl.friendly()
        except MemoryError:
            # e.g. a paste larger than the heap: ESP32 reports it and restarts the REPL
            _clock.repair_heap()
            board.stdout.write("MemoryError: input too large for the heap\n")
            continue
        except Exception as e:  # noqa: BLE001 - the REPL itself must survive anything
            _clock.repair_heap()
            board.stdout.write("REPL error, restarting it: %r\n" % (e,))
            continue
        if nxt == "reboot":
            break
        mode = nxt
    link.write_raw(b"MPY: soft reboot\r\n")
    link.reboot(b"s" + (b"r" if mode == "raw" else b"f"))


if __name__ == "__main__":
    # The Unix port runs this file in __main__; the boot code itself runs from this file
    # imported again as the module `simboot`, so that __main__ can be the user's alone.
    import simboot

    simboot.main(globals())
