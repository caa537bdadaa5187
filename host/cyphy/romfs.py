"""ROMFS images of the firmware: its compiled modules in flash, imported in place.

MicroPython 1.25+ mounts a ROMFS partition at /rom and puts /rom and /rom/lib on sys.path
ahead of /lib; a .mpy file there is executed from flash, so its bytecode and constant
data take no heap (docs/firmware.md "ROMFS"). The image format is MicroPython's VfsRom;
mpremote's VfsRomWriter writes it (the same writer `mpremote romfs build` uses).

    from cyphy import romfs
    img = romfs.image(romfs.firmware_lib("esp32"))    # bytes: the firmware's /lib as /rom/lib
"""

from __future__ import annotations

from collections.abc import Mapping

from mpremote.romfs import VfsRomWriter


def image(files: Mapping[str, bytes]) -> bytes:
    """A ROMFS image holding `files` ({"/lib/cyphy_node/pid.mpy": data, ...}: absolute
    paths as on the node's filesystem) under the same paths below /rom."""
    tree: dict = {}
    for path, data in files.items():
        if not path.startswith("/") or path.endswith("/"):
            raise ValueError(f"{path!r}: an absolute file path is needed")
        *dirs, name = path[1:].split("/")
        d = tree
        for part in dirs:
            d = d.setdefault(part, {})
            if not isinstance(d, dict):
                raise ValueError(f"{path!r}: {part} is a file")
        d[name] = bytes(data)
    w = VfsRomWriter()

    def emit(d: dict) -> None:
        for name in sorted(d):
            v = d[name]
            if isinstance(v, dict):
                w.opendir(name)
                emit(v)
                w.closedir()
            else:
                w.mkfile(name, v)

    emit(tree)
    return w.finalise()


def firmware_lib(target: str = "esp32") -> dict[str, bytes]:
    """The firmware's /lib files for a target, compiled (what a ROMFS image of it holds)."""
    from cyphy import firmware

    return {b.dst: b.data for b in firmware.build(target) if b.dst.startswith("/lib/")}
