"""`cyphy check`: will a config run on a chip, and in its RAM? (cyphy.check)"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from cyphy.cli.common import EXIT_FAILED

if TYPE_CHECKING:
    from cyphy.check import Report

EXIT_USAGE = 2


class UsageFailure(click.ClickException):
    """A usage error shown as one line (no usage block): bad file, not JSON, unknown chip."""

    exit_code = EXIT_USAGE


@click.command()
@click.argument("config_file", metavar="CONFIG")
@click.option("--chip", default="esp32", show_default=True, metavar="esp32|esp32s3|esp32c3",
              help="The node's chip.")
@click.option("--psram", is_flag=True, help="The board has PSRAM (MicroPython's heap is then in it).")
@click.option("--romfs", is_flag=True,
              help="Measure with the firmware's modules in a ROMFS image (MicroPython 1.25+: "
                   "bytecode runs from flash) instead of on the filesystem.")
@click.option("--frozen", is_flag=True,
              help="Measure with the firmware frozen into MicroPython (a custom build, as a "
                   "WROOM needs): on a 32-bit MicroPython built here from its source "
                   "(needs a C compiler with -m32; docs/firmware.md). The default without --psram.")
@click.option("--lib", is_flag=True,
              help="Measure with the firmware's .mpy files on the filesystem (/lib), as a stock "
                   "MicroPython runs them. The default with --psram.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(config_file: str, chip: str, psram: bool, romfs: bool, frozen: bool, lib: bool,
          as_json: bool) -> None:
    """Check a node config for a chip before anything is flashed: the firmware's config
    validator, the chip's pins, peripherals and PWM limits, then the firmware started with
    it on a 32-bit MicroPython for its RAM (resident bytes, each module's import cost,
    free bytes and the largest free block in the chip's typical heap) and each loop's
    share of the CPU at the chip's speed.

    The firmware is measured where the board keeps it: frozen into MicroPython on a board
    without PSRAM (its heap cannot hold the bytecode), on the filesystem with --psram;
    --frozen, --lib or --romfs choose. It fits when resident <= heap - 32 KB, the largest
    free block is >= 32 KB and the loops need at most 100 % of the CPU (docs/cli.md,
    "cyphy check"); a node refuses at boot a config that does not fit its RAM.
    Exit codes: 0 fits, 1 does not fit or a config/chip error (the field is named),
    2 usage (no such file, not JSON, unknown chip)."""
    from cyphy import check as C
    from cyphy.mp32 import Mp32Error

    try:
        if lib + romfs + frozen > 1:
            raise C.CheckUsageError("--lib, --romfs and --frozen exclude each other: the firmware "
                                    "is in one place")
        C.heap_for(chip, psram)
        cfg = C.load_config(config_file)
        if "wiring" in cfg and "loops" not in cfg:
            raise C.CheckUsageError(f'{config_file}: this looks like a sim bench file ("plant" and '
                                    f'"wiring", for cyphy sim start --bench), not a node config '
                                    f'("channels" and "loops", docs/config.md)')
        from pathlib import Path

        rep = C.check(cfg, chip, psram, base=Path(config_file).resolve().parent, romfs=romfs,
                      frozen=True if frozen else False if (lib or romfs) else None)
    except C.CheckUsageError as e:
        raise UsageFailure(str(e)) from None
    except Mp32Error as e:
        raise click.ClickException(f"cannot measure: {str(e).splitlines()[0]}") from None
    if as_json:
        click.echo(json.dumps(rep.to_json()))
    else:
        click.echo(text(rep))
    for w in rep.warnings:
        click.echo(f"warning: {w}", err=True)
    if not rep.fits:
        if not as_json:
            click.echo(("error: " if rep.errors else "") + rep.summary(), err=True)
        raise SystemExit(EXIT_FAILED)


def text(r: Report) -> str:
    from cyphy.check import MARGIN, MCU

    where = f"{MCU[r.chip]} {'with' if r.psram else 'without'} PSRAM"
    if r.romfs:
        where += f", firmware in a ROMFS image of {r.romfs_bytes} bytes"
    if r.frozen:
        where += ", firmware frozen (32-bit MicroPython built here)"
    name = r.config_name or "config"
    if r.errors:
        e = r.errors[0]
        return f"{name} on {where}: {e['kind']} error: {e['field']}: {e['reason']}"
    if r.ram_resident_bytes is None:        # it did not start: nothing was measured
        return "\n".join([f"{name} on {where}: DOES NOT FIT", "  why: " + "; ".join(r.reasons),
                          *("  " + a for a in r.advice)])
    lines = [f"{name} on {where}: {'fits' if r.fits else 'DOES NOT FIT'}",
             f"  heap           {r.heap_bytes:>9} bytes  ({r.heap_source})",
             f"  resident       {r.ram_resident_bytes:>9} bytes  (at most heap - {MARGIN} = "
             f"{r.heap_bytes - MARGIN})",
             f"  free           {r.ram_free_bytes:>9} bytes",
             f"  largest free   {r.ram_largest_free_bytes:>9} bytes  (at least {MARGIN})"]
    lines.append("  modules (import cost, in import order):")
    for m, b in r.modules.items():
        lines.append(f"    {m:<22} {b:>7} bytes")
    if r.loops:
        lines.append(f"  loops (CPU at {MCU[r.chip]} speed):")
        for n, v in r.loops.items():
            if v.get("cpu_pct") is None:
                lines.append(f"    {n:<22} {v['rate_hz']:>4} Hz  (no speed figure: the pystone benchmark is missing)")
            else:
                lines.append(f"    {n:<22} {v['rate_hz']:>4} Hz  {v['tick_us']:>8.0f} us per tick  "
                             f"{v['cpu_pct']:>6.2f} % CPU" + ("  (in its task)" if v.get("in_task") else ""))
    if r.tasks:
        lines.append(f"  tasks (loops and blocks, CPU at {MCU[r.chip]} speed):")
        for n, v in r.tasks.items():
            lines.append(f"    {n:<22} {v['rate_hz']:>4} Hz  {v['tick_us']:>8.0f} us per tick  "
                         f"{v['cpu_pct']:>6.2f} % CPU")
    if r.user_blocks:
        lines.append("  user blocks (tick under heap_lock on 32-bit and Unix MicroPython; time at "
                     f"{MCU[r.chip]} speed):")
        for n, v in r.user_blocks.items():
            t = "" if v["tick_us"] is None else f"{v['tick_us']:>8.0f} us per tick (budget {v['budget_us']})"
            state = "allocation-free" if v["allocation_free"] else v["why"]
            lines.append(f"    {n:<22} {v['module']}.py  {state}  {t}")
    if not r.fits:
        lines.append("  why: " + "; ".join(r.reasons))
        for a in r.advice:
            lines.append("  " + a)
    return "\n".join(lines)
