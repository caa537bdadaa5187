# The cyphy node firmware as a MicroPython manifest: the one list of what goes on a node.
#
# - MicroPython's tools (tools/manifestfile.py, makemanifest.py) read it to freeze the
#   firmware into a custom build:  make BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/firmware/manifest.py
#   (docs/firmware.md, "Freezing the firmware").
# - cyphy.firmware (host/cyphy/firmware.py) reads the same file, with a small evaluator of
#   the functions used here, for `cyphy deploy`, `cyphy flash` and the tests: every module
#   below goes to /lib/<its path>, compiled to .mpy.
#
# Paths are relative to this file's directory (firmware/). Only package(), module() and
# include() are used, and `options`:
#
#   options.target         "esp32" (default) or "sim": which board module is `board`. The
#                          sim also gets boards/sim/board.py as boards.sim.board.
#   options.port_manifest  True (default): include the ESP32 port's own manifest first, so
#                          FROZEN_MANIFEST=firmware/manifest.py keeps what the port freezes
#                          (its _boot.py mounts the filesystem). cyphy.firmware passes False;
#                          so does a manifest of yours that includes a board's manifest:
#                            include("$(BOARD_DIR)/manifest.py")
#                            include("/path/to/cyphy/firmware", port_manifest=False)
#
# Checked by hand with MicroPython's own tools/manifestfile.py (v1.28.0 and
# v1.29.0-preview-731-g1c3c201149), freeze mode: execute() of this file with MPY_DIR,
# PORT_DIR=ports/esp32 and MPY_LIB_DIR set lists the port's and micropython-lib's modules,
# then exactly the modules cyphy.firmware.files("esp32") has, under the same names, each
# KIND_FREEZE_AS_MPY; include(this file, target=..., port_manifest=False) lists exactly
# files(target)'s for "esp32" and "sim". v1.28.0's makemanifest.py compiled every module
# with -march=xtensawin. Nothing here has run frozen on hardware.
# (MICROPYTHON_DIR=<checkout> pytest tests/host/test_manifest.py repeats the comparison.)

options.defaults(target="esp32", port_manifest=True)
if options.target not in ("esp32", "sim"):
    raise ValueError("options.target must be 'esp32' or 'sim', not %r" % (options.target,))

if options.target == "esp32" and options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")

# No metadata(): manifestfile.py allows one call for a manifest and all it include()s, so a
# manifest including this one could not have its own; a version in it would also be
# appended to every frozen module as __version__.

# Every module of the cyphy_node package, by name: a new module must be added here
# (tests/host/test_manifest.py fails until it is).
package(
    "cyphy_node",
    files=[
        "__init__.py",
        "app.py",
        "autotune.py",
        "blocks.py",
        "cfgdev.py",
        "cfggraph.py",
        "cfgview.py",
        "comms.py",
        "config.py",
        "console.py",
        "devices.py",
        "ds18b20.py",
        "faults.py",
        "fixed.py",
        "graph.py",
        "hostside.py",
        "io.py",
        "max31855.py",
        "modbus.py",
        "net.py",
        "node.py",
        "params.py",
        "peer.py",
        "pid.py",
        "proto.py",
        "pulse.py",
        "record.py",
        "requests.py",
        "sched.py",
        "serfec.py",
        "sht3x.py",
        "store.py",
        "tpo.py",
        "tuning.py",
        "udp.py",
    ],
    base_path="lib",
)

# Board support (boards/ has no __init__.py: a namespace package, which MicroPython imports
# from frozen modules as from a filesystem). Every chip's description goes on every node
# (one firmware for the three chips); a node imports only its own chip_*.py.
package("boards", files=["hal.py", "esp32/board.py", "esp32/buses.py", "esp32/pins.py",
                         "esp32/chip_esp32.py", "esp32/chip_esp32s3.py", "esp32/chip_esp32c3.py",
                         "esp32/wifi.py"],
        base_path="..")
if options.target == "sim":
    package("boards", files=["sim/board.py"], base_path="..")

# `from board import Board`: the target's board module, as the top-level module `board`.
module("board.py", base_path="../boards/" + options.target)

# Not frozen: MicroPython runs /boot.py and /main.py from the filesystem by name (a frozen
# _boot.py is something else, the port's own). MicroPython's tools ignore this name;
# cyphy.firmware reads it and sends both files, as source, to the node's root, last.
FILESYSTEM_SCRIPTS = ("boot.py", "main.py")
