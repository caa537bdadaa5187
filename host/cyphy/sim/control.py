"""Start, stop and list sim nodes (what `cyphy sim ...` and the test fixtures call)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from cyphy.sim.nodes import Node, SimError, all_nodes, cyphy_home, parse_heap, rom_dir

START_TIMEOUT_S = 20.0
DEFAULT_HEAP = "512K"   # a PSRAM node's


def start(name: str, baud: int = 115200, heap: str | None = None, timeout: float = START_TIMEOUT_S,
          home: Path | None = None, ticks_start: int = 0, virtual_time: bool = False,
          bench: Path | dict | None = None, download: bool = False, speed: str = "host",
          ram: str | None = None) -> dict:
    """Power a node on and wait until its REPL answers. Returns its state (port, pid...).

    ram: the board's memory, kept with the node ("wroom": an ESP32-WROOM without PSRAM,
    a new node's default; "psram": with PSRAM, the heap given by heap, 512K if None);
    None: as kept. A heap for a WROOM node is refused (it has the chip's).
    download=True powers it on in ESP32's serial download mode instead (GPIO0 held low):
    the ROM loader answers esptool on the port (with --before no-reset) and no MicroPython
    runs until the loader is told to run the app or the node is restarted normally."""
    if not 0 <= ticks_start < (1 << 30):
        raise SimError(f"--ticks-start must be 0..{(1 << 30) - 1} (ESP32 ticks wrap at 2**30), not {ticks_start}")
    if speed not in ("host", "chip"):
        raise SimError(f"--speed must be host or chip, not {speed!r}")
    if baud < 0:
        raise SimError(f"--baud must be 0 (no line-rate emulation) or a positive rate, not {baud}")
    if heap is not None:
        parse_heap(heap)
    home = home or cyphy_home()
    node = Node.named(name, home)
    data = load_bench(bench) if bench is not None else None  # checked before anything is made
    if ram is not None:
        node.create()
        node.set_ram(ram)   # refused while it runs with the other memory
    if heap is not None and (ram or node.ram()) == "wroom":
        raise SimError(f"--heap {heap}: node {name} is an ESP32-WROOM, whose heap is the chip's "
                       f"(docs/boards.md); start it with --psram for a heap of your choice")
    heap = heap or DEFAULT_HEAP
    st = node.state()
    if st is not None:
        if bool(st.get("download")) != download:
            now, want = ("in download mode", "normally") if st.get("download") else ("normally", "in download mode")
            raise SimError(f"node {name} is running {now}: stop it first (cyphy sim stop {name}) "
                           f"to start it {want}")
        st["already_running"] = True
        return st
    if not (rom_dir() / "simboot.py").exists():
        raise SimError(f"sim ROM not found at {rom_dir()}: is cyphy installed from its source tree (pip install -e)?")
    node.create()
    if data is not None:
        _install_bench(node, data)
    log_at = node.supervisor_log.stat().st_size if node.supervisor_log.exists() else 0
    r, w = os.pipe()
    with open(node.supervisor_log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cyphy.sim.supervisor", "--home", str(home), "--name", name,
             "--baud", str(baud), "--heap", heap, "--ticks-start", str(ticks_start),
             *(["--virtual-time"] if virtual_time else []), *(["--download"] if download else []),
             "--speed", speed,
             "--ready-fd", str(w)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,),
            start_new_session=True,  # a daemon: survives the shell that started it
        )
    os.close(w)
    deadline = time.monotonic() + timeout
    msgs = b""
    try:
        while time.monotonic() < deadline:
            rl, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not rl:
                break
            chunk = os.read(r, 4096)
            if not chunk:
                break
            msgs += chunk
            if b"ready" in msgs or b"error" in msgs:
                break
    finally:
        os.close(r)
    text = msgs.decode(errors="replace")
    if "ready" not in text:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tail = _tail(node.supervisor_log, since=log_at)  # this boot's lines only
        why = text.strip() or ("timed out after %.0f s" % timeout if proc.returncode is None or proc.returncode < 0 else f"supervisor exited with status {proc.returncode}")
        raise SimError(f"node {name} did not boot: {why}\n--- {node.supervisor_log} (last lines) ---\n{tail}")
    st = node.state() or {}
    st["boot"] = text.split("ready", 1)[1].strip()
    return st


NODE_CONFIG_KEYS = ("loops", "channels", "comms_timeout_ms", "schema")


def load_bench(bench: Path | dict) -> dict:
    """A bench (plant + wiring: docs/boards.md), from a file or a dict, checked: SimError
    in one line for a file that is missing, unreadable, binary or not JSON, for a node
    config given instead (it may have a "plant", for `cyphy check`, but no wiring: every
    input would read 0), and for a plant or wiring the sim cannot build."""
    where = "bench" if isinstance(bench, dict) else f"--bench {bench}"
    if isinstance(bench, dict):
        data = bench
    else:
        try:
            data = json.loads(Path(bench).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise SimError(f'{where}: a binary file, not a bench (a JSON file with "plant" and '
                           f'"wiring": docs/boards.md)') from None
        except OSError as e:
            raise SimError(f"{where}: {e.strerror}") from None
        except ValueError as e:
            raise SimError(f'{where}: not JSON ({e}); a bench is a JSON object with "plant" and '
                           f'"wiring" (docs/boards.md)') from None
    if not isinstance(data, dict):
        raise SimError(f'{where}: not a bench: a bench is a JSON object with "plant" and '
                       f'"wiring" (docs/boards.md)')
    if any(k in data for k in NODE_CONFIG_KEYS) and "wiring" not in data:
        raise SimError(f'{where}: this looks like a node config (it has '
                       f'{", ".join(repr(k) for k in NODE_CONFIG_KEYS if k in data)}), not a bench: '
                       f'a bench wires the board\'s pins to a plant ("plant" and "wiring", '
                       f'docs/boards.md); flash the config with cyphy flash --config')
    if not isinstance(data.get("plant"), dict):
        raise SimError(f'{where}: a bench needs a "plant" object (see docs/plants.md)')
    if "wiring" not in data:
        raise SimError(f'{where}: no "wiring": a bench says which pin sees which plant '
                       f'signal ("plant" and "wiring", docs/boards.md)')
    for i, w in enumerate(data.get("wiring", [])):
        if isinstance(w, dict) and w.get("kind") == "modbus":
            # a Modbus RTU slave on the node's UART pins (boards/sim/rom/_uart.py)
            if not all(isinstance(w.get(k), int) for k in ("tx", "rx", "slave")) \
                    or not isinstance(w.get("registers", []), list):
                raise SimError(f'{where}: wiring[{i}] (modbus) needs "tx", "rx", "slave" and '
                               f'"registers": [{{"type": "input"|"holding", "address": ..., '
                               f'"signal" or "drives": ...}}]')
            continue
        if isinstance(w, dict) and w.get("kind") in ("pulses", "quadrature"):
            keys = ("pin",) if w["kind"] == "pulses" else ("pin_a", "pin_b")
            if not all(isinstance(w.get(k), int) for k in keys) or "signal" not in w \
                    or not isinstance(w.get("per_unit"), (int, float)):
                raise SimError(f'{where}: wiring[{i}] ({w["kind"]}) needs {", ".join(keys)}, '
                               f'"signal" and "per_unit"')
            continue
        if isinstance(w, dict) and w.get("kind") in ("i2c", "spi"):
            keys = ("sda", "scl") if w["kind"] == "i2c" else ("sck", "miso")
            if not all(isinstance(w.get(k), int) for k in keys) or not isinstance(w.get("devices"), list):
                raise SimError(f'{where}: wiring[{i}] ({w["kind"]}) needs {" and ".join(keys)} and '
                               f'"devices"')
            continue
        if isinstance(w, dict) and w.get("kind") == "onewire":
            # a 1-Wire bus: its sensors each read a plant signal (boards/sim/rom/_onewire.py)
            if not isinstance(w.get("pin"), int) or not isinstance(w.get("devices"), list) \
                    or not all(isinstance(d, dict) and "signal" in d for d in w["devices"]):
                raise SimError(f'{where}: wiring[{i}] (onewire) needs "pin" and "devices": '
                               f'[{{"signal": ..., "rom": ..., "faults": [...]}}]')
            continue
        if not isinstance(w, dict) or not {"pin", "kind", "signal"} <= w.keys():
            raise SimError(f'{where}: wiring[{i}] needs "pin", "kind" and "signal"')
        if w["kind"] not in ("adc", "din", "pwm", "dac", "dout"):
            raise SimError(f'{where}: wiring[{i}].kind must be adc, din, pwm, dac, dout or '
                           f'onewire, not {w["kind"]!r}')
    _check_bench_signals(data)
    return data


def _install_bench(node: Node, data: dict) -> None:
    """Keep a checked bench with the node for every boot."""
    tmp = node.bench.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, node.bench)


def _rom_module(name: str):
    """A module of the sim's ROM, loaded on the host (they run on CPython too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_cyphy_sim" + name, rom_dir() / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


class _HostBench:
    """What a ROM device model needs of the bench while the host checks a bench file."""

    def measure(self, signal: str) -> float:
        return 0.0


class _ModbusBench:
    """What the ROM's Modbus slave model needs of a bench while the host checks one."""

    def __init__(self) -> None:
        self.modbus: dict = {}

    def measure(self, signal: str) -> float:
        return 0.0


def _check_bench_signals(data: dict) -> None:
    """Build the plant on the host (the ROM's _plant.py runs on CPython too) so a bad
    parameter or a pin wired to a signal the plant does not have fails here, clearly."""
    mod = _rom_module("_plant")
    try:
        plant = mod.make(data["plant"], data.get("seed", 1))
    except ValueError as e:
        raise SimError(f"bench plant: {e}") from None
    readable = set(plant.outputs)
    drivable = set(plant.inputs) | set(getattr(plant, "loads", ()))
    modbus = _ModbusBench()
    for i, w in enumerate(data.get("wiring", [])):
        if w["kind"] == "modbus":
            try:
                line = _rom_module("_uart").wire(modbus, w, f"wiring[{i}]")
            except (ValueError, TypeError, KeyError) as e:
                raise SimError(f"bench {e}") from None
            s = line.slaves[-1]
            for sig in {src[0] for src in list(s.input.values()) + list(s.holding_src.values())}:
                if sig not in readable:
                    raise SimError(f'bench wiring[{i}]: register signal {sig!r} is not one of '
                                   f'the plant\'s outputs: {", ".join(sorted(readable))}')
            for d in s.drives:
                if d[1] not in drivable:
                    raise SimError(f'bench wiring[{i}]: register drives {d[1]!r}, not one of '
                                   f'the plant\'s inputs: {", ".join(sorted(drivable))}')
            continue
        if w["kind"] in ("pulses", "quadrature"):
            try:
                _rom_module("_pulse").wire(w, f"wiring[{i}]")
            except (ValueError, TypeError, KeyError) as e:
                raise SimError(f"bench {e}") from None
            if w["signal"] not in readable:
                raise SimError(f'bench wiring[{i}].signal: {w["signal"]!r} is not one of the '
                               f'plant\'s outputs: {", ".join(sorted(readable))}')
            continue
        if w["kind"] in ("i2c", "spi"):
            mod = _rom_module("_" + w["kind"])
            try:
                bus = mod.wire(_HostBench(), w, f"wiring[{i}]")
            except (ValueError, TypeError, KeyError) as e:
                raise SimError(f"bench {e}") from None
            for k, d in enumerate(bus.devices):
                for sig in [getattr(d, a, None) for a in ("signal", "t", "rh", "internal")]:
                    if isinstance(sig, str) and sig not in readable:
                        raise SimError(f'bench wiring[{i}].devices[{k}]: {sig!r} is not one of '
                                       f'the plant\'s outputs: {", ".join(sorted(readable))}')
            continue
        if w["kind"] == "onewire":
            ow = _rom_module("_onewire")
            for k, d in enumerate(w["devices"]):
                try:
                    ow.DS18B20(d, w["pin"], k, None)
                except (ValueError, TypeError, KeyError) as e:
                    raise SimError(f"bench wiring[{i}].devices[{k}]: {e}") from None
                if d["signal"] not in readable:
                    raise SimError(f'bench wiring[{i}].devices[{k}].signal: {d["signal"]!r} is not '
                                   f'one of the plant\'s outputs: {", ".join(sorted(readable))}')
            continue
        ok = readable if w["kind"] in ("adc", "din") else drivable
        if w["signal"] not in ok:
            raise SimError(f'bench wiring[{i}].signal: {w["signal"]!r} is not one of the plant\'s '
                           f'{"outputs" if w["kind"] in ("adc", "din") else "inputs"}: {", ".join(sorted(ok))}')


def erase(name: str, home: Path | None = None) -> None:
    """Erase a stopped node's whole flash (as `esptool erase-flash` would): blank image."""
    node = Node.named(name, home)
    if not node.exists():
        raise SimError(f"no sim node named {name!r} (see: cyphy sim list)")
    if node.state() is not None:
        raise SimError(f"node {name} is running: stop it first (cyphy sim stop {name})")
    from cyphy import flashimage

    flashimage.create_flash_image(node.image, overwrite=True)


def stop(name: str, home: Path | None = None) -> bool:
    return Node.named(name, home).stop()


def listing(home: Path | None = None) -> list[dict]:
    rows = []
    for node in all_nodes(home):
        st = node.state()
        cfg = node.config()
        rows.append({
            "name": node.name,
            "running": st is not None,
            "port": st["port"] if st else None,
            "pid": st["pid"] if st else None,
            "baud": st["baud"] if st else None,
            "virtual_time": st.get("virtual_time") if st else None,
            "bench": node.bench.exists(),
            "sandbox": st.get("sandbox") if st else None,
            "download": bool(st.get("download")) if st else None,
            "mac": cfg["mac"],
            "ip": cfg.get("ip"),
            "image": str(node.image),
        })
    return rows


def _tail(path: Path, lines: int = 15, since: int = 0) -> str:
    """The last lines of a log, from byte `since` on (never an earlier boot's)."""
    try:
        with path.open("rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing logged)"
