"""`cyphy flash`: MicroPython, the partition table and the cyphy filesystem, with esptool."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cyphy.cli.common import Failed, emit, errors


@click.command()
@click.option("--port", required=True, help="/dev/ttyUSB0, serial:///dev/ttyUSB0, or sim://NAME "
                                            "(restarted in its ROM's download mode for the write).")
@click.option("--firmware", type=click.Path(dir_okay=False, path_type=Path),
              help="MicroPython's ESP32 .bin (as published, for 0x1000). Without it only the "
                   "partition table and the filesystem are written (MicroPython already there).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The node's config (JSON, checked before anything is written).")
@click.option("--name", help="The node's name (set in the config).")
@click.option("--no-erase", is_flag=True, help="Write without erasing the whole chip first.")
@click.option("--baud", type=int, default=460800, show_default=True)
@click.option("--before", default=None, help="esptool's reset before (default-reset; a PTY or a "
                                             "board without auto-reset: no-reset).")
@click.option("--after", default=None, help="esptool's reset after (hard-reset).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@errors
def flash(port: str, firmware: Path | None, config_path: Path | None, name: str | None,
          no_erase: bool, baud: int, before: str | None, after: str | None, as_json: bool) -> None:
    """Write MicroPython, the partition table and a filesystem with the cyphy firmware
    (compiled to .mpy) and the config, then verify (esptool: chip detection, erase,
    write, MD5). Keys and Wi-Fi come after, with `cyphy provision`."""
    from cyphy.flash import FlashError, flash as do_flash
    from cyphy.provision import ProvisionError, check_config, load_config_file

    try:
        cfg = None
        if config_path is not None:
            cfg = check_config(load_config_file(str(config_path)), name)
        elif name:
            from cyphy.provision import minimal_config
            cfg = check_config(minimal_config(name), None)
        with _progress() as cb:
            if port.startswith("sim://"):
                report = _flash_sim(port[len("sim://"):].strip("/"), firmware, cfg, not no_erase, cb)
            else:
                dev = port[len("serial://"):] if port.startswith("serial://") else port
                report = do_flash(dev, firmware, cfg, "esp32", not no_erase,
                                  before or "default-reset", after or "hard-reset", baud, cb)
    except (FlashError, ProvisionError) as e:
        raise Failed(str(e)) from None
    emit(report, as_json, _text)


def _flash_sim(name: str, firmware: Path | None, cfg: dict | None, erase: bool, cb) -> dict:
    # A sim node has no DTR/RTS to reset it into its ROM loader: cyphy does that part, and
    # powers it up normally afterwards, whether the write worked or not.
    from cyphy.flash import FlashError, plan, write
    from cyphy.sim import control
    from cyphy.sim.nodes import Node, SimError

    parts = plan(firmware, cfg, "sim")           # every check before the node is touched
    try:
        node = Node.named(name)
        st = node.state()
        if st is None:
            raise FlashError(f"sim node {name!r} is not running (cyphy sim start {name})")
        baud = int(st.get("baud", 115200))
        control.stop(name)
        try:
            st = control.start(name, baud=baud, download=True)
            report = write(st["port"], parts, erase, "no-reset", "no-reset", 460800, cb)
        finally:
            control.stop(name)
            st = control.start(name, baud=baud)  # boots MicroPython from its flash
    except SimError as e:
        raise FlashError(str(e)) from None
    report["port"] = f"sim://{name}"
    report["booted"] = st.get("port")
    return report


class _progress:
    """A rich bar on a terminal (stderr), nothing otherwise."""

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>5.1f} %"), console=Console(stderr=True),
                          transient=True)
        self.p.__enter__()
        self.task = self.p.add_task("flash", total=100)
        return lambda what, pct: self.p.update(self.task, description=what, completed=pct)

    def __exit__(self, *exc):
        if hasattr(self, "p"):
            self.p.__exit__(*exc)


def _text(r: dict) -> str:
    lines = [f"{r['port']}: {r.get('chip') or 'ESP32'}, MAC {r.get('mac') or '?'}"]
    for g in r["regions"]:
        lines.append(f"  {g['offset']:#08x}  {g['bytes']:>8} bytes  {g['what']}")
    lines.append("verified (MD5)" + (", erased first" if r["erased"] else ""))
    return "\n".join(lines)
