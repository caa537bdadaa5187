"""Give a node its name, config, key and Wi-Fi credentials over the raw REPL.

    with Device.open("sim://oven") as dev:
        provision(dev, "oven-1", config=json.load(open("oven.json")),
                  wifi=("lab", password), key_hex=None)   # key: the node's, the host's, or new

What goes where (firmware/lib/cyphy_node/app.py reads both at boot):
    /config.json    the config (docs/config.md), validated on the host first, with `name` set
    /secrets.json   {"key": hex, "wifi": {"ssid", "password"}}

Every write is atomic and verified: the file goes to PATH.tmp, is read back and hashed
on the node, and only then renamed over PATH; a node that loses power at any point keeps
its previous file whole. Provisioning twice changes nothing the second time: a file whose
content would not change is not written.

Secrets never leave the host in a form the node prints: /secrets.json is merged on the
node (the existing key or Wi-Fi password is kept without the host ever reading it), and the
node only answers whether it has a key and whether it equals the one the host offers.
"""

from __future__ import annotations

import hashlib
import os
import json
import secrets as _secrets
from pathlib import Path
from typing import Callable

from cyphy import keys
from cyphy.device import Device, DeviceError

CONFIG_PATH = "/config.json"
COMPILED_PATH = "/config.node.json"  # cyphy_node.cfgview.COMPILED
SECRETS_PATH = "/secrets.json"
# The persisted layer of loop parameters (cyphy_node/params.py): an applied autotune's
# gains, values kept with `cyphy set --save`; at boot they win over the config's.
TUNING_PATH = "/autotune.json"
PERSISTED_KEYS = ("setpoint", "kp", "ki", "kd")


class ProvisionError(Exception):
    """Bad input for provisioning (a config error names the field); nothing was written."""


# _cysec(path, key, wifi, cand, write): the node's side of /secrets.json. key (hex) and
# wifi (dict) replace those parts when not None; cand is a key to compare with the
# node's. Prints JSON: what the node has (never a secret), whether the merge changes the
# file, and the new file's SHA-256 after a verified, atomic write.
SEC_SRC = """\
def _cysec(p, key, wifi, cand, write):
 import json, os, hashlib, binascii
 try:
  with open(p) as f:
   s = json.load(f)
  if not isinstance(s, dict):
   s = {}
 except (OSError, ValueError):
  s = {}
 k = s.get('key')
 k = k.strip().lower() if isinstance(k, str) and k.strip() else None
 w = s.get('wifi') if isinstance(s.get('wifi'), dict) else {}
 r = {'has_key': k is not None, 'same_key': cand is not None and k == cand,
      'ssid': w.get('ssid'), 'has_password': bool(w.get('password'))}
 n = dict(s)
 if key is not None:
  n['key'] = key
 if wifi is not None:
  n['wifi'] = wifi
 r['changed'] = n != s
 r['key_changed'] = n.get('key') != s.get('key')
 r['wifi_changed'] = n.get('wifi') != s.get('wifi')
 if write and n != s:
  d = json.dumps(n).encode()
  with open(p + '.tmp', 'wb') as f:
   f.write(d)
  h = hashlib.sha256()
  with open(p + '.tmp', 'rb') as f:
   h.update(f.read())
  x = binascii.hexlify(h.digest()).decode()
  if x != binascii.hexlify(hashlib.sha256(d).digest()).decode():
   os.remove(p + '.tmp')
   raise OSError('secrets: read back differs')
  os.rename(p + '.tmp', p)
  r['sha256'] = x
 s = n = k = d = None
 print(json.dumps(r))
"""


def minimal_config(name: str) -> dict:
    """A config with no channels and no loops: the node boots, names itself, runs nothing."""
    return {"schema": 1, "name": name, "comms_timeout_ms": 0, "channels": [], "loops": []}


def check_config(cfg: dict, name: str | None) -> dict:
    """cfg with `name` set (when given), validated by cyphy_node.config like the node
    would; ProvisionError("config error: <field>: <why>") otherwise."""
    from cyphy_node import config as C

    if not isinstance(cfg, dict):
        raise ProvisionError("config error: the config must be a JSON object")
    cfg = dict(cfg)
    if name is not None:
        cfg["name"] = name
    try:
        C.validate(cfg)
    except C.ConfigError as e:
        raise ProvisionError(f"config error: {e} (fix that field: docs/config.md)") from None
    return cfg


def target_chip(dev: Device) -> str | None:
    """The node's chip ("esp32", "esp32s3", "esp32c3"): a sim node's from its node.json,
    a board's from os.uname().machine ("... with ESP32S3"); None if unknown."""
    from cyphy import chips
    from cyphy.sim.nodes import all_nodes

    port = getattr(dev, "device", None) or getattr(dev, "port", "")
    try:
        real = os.path.realpath(str(port))
        for n in all_nodes():
            if str(n.tty) == str(port) or (n.tty.exists() and os.path.realpath(n.tty) == real):
                return n.chip()
    except (OSError, ValueError):
        pass
    try:
        return chips.chip_of_machine(dev.info().get("machine", ""))
    except Exception:  # noqa: BLE001 - an unknown board: the node's own checks remain
        return None


def check_chip(cfg: dict, chip: str | None) -> None:
    """ProvisionError("config error: <field>: <why> (ESP32-C3)") if the chip cannot run cfg:
    pins and their functions, DAC, ADC2 with Wi-Fi, ADC ranges, PWM frequencies
    (cyphy.chips.check_config)."""
    if chip is None:
        return
    from cyphy import chips

    try:
        chips.check_config(cfg, chip)
    except chips.ChipConfigError as e:
        raise ProvisionError(f"config error: {e} (the node is an {chips.chip(chip)['mcu']})") from None


def target_heap(dev: Device, chip: str) -> tuple[bool, "object | None"]:
    """(psram, heap) that the RAM check (cyphy.check) assumes for the node on dev.

    MicroPython's heap on the node, gc.mem_alloc() + gc.mem_free() (on ESP32 1.22+ that
    counts the heap it can still grow into), decides PSRAM: 512 KB or more is a board with
    PSRAM (a PSRAM sim node's default heap, 512K, is "an ESP32 with PSRAM"). A real board,
    and a WROOM sim node (the chip's heap: docs/boards.md), is then judged against its
    chip's typical heap (cyphy.check.HEAPS). A PSRAM sim node is judged
    against its own heap, less the share its bench's plant model takes (BENCH_HEAP, which
    a real plant does not cost): the sim gives the firmware exactly that."""
    from cyphy import check
    from cyphy.sim.nodes import all_nodes

    try:
        total = int(dev.exec("import gc\ngc.collect()\nprint(gc.mem_alloc() + gc.mem_free())").split()[-1])
    except (DeviceError, ValueError, IndexError):
        return False, None
    port = getattr(dev, "device", None) or getattr(dev, "port", "")
    sim = None
    try:
        real = os.path.realpath(str(port))
        for n in all_nodes():
            if str(n.tty) == str(port) or (n.tty.exists() and os.path.realpath(n.tty) == real):
                sim = n
                break
    except (OSError, ValueError):
        pass
    if sim is not None and sim.ram() == "wroom":
        return False, None      # a WROOM sim node gives the firmware the chip's own heap
    if sim is not None and (sim.state() or {}).get("bench"):
        from cyphy.sim.supervisor import BENCH_HEAP

        total -= BENCH_HEAP
    psram = total >= 512 * 1024 and (chip, True) in check.HEAPS
    if sim is None:
        return psram, None
    return psram, check.Heap(total, total, f"the sim node {sim.name}'s own heap")


def check_fit(dev: Device, cfg: dict, chip: str | None, config_file: str | None = None,
              user_dir: Path | None = None) -> list[str]:
    """Refuse (ProvisionError, one line) a config whose node would not fit the target's RAM
    or CPU (cyphy.check: the firmware started with it on a 32-bit MicroPython). Returns warnings
    (the check could not run: the config is then written unchecked)."""
    if chip is None:
        return []
    from cyphy import check, mp32

    psram, heap = target_heap(dev, chip)
    try:
        rep = check.check(cfg, chip, psram, heap=heap, base=user_dir)
    except (mp32.Mp32Error, check.CheckUsageError) as e:
        return [f"RAM not checked ({str(e).splitlines()[0]})"]
    if rep.fits:
        return []
    how = f"cyphy check {config_file or 'CONFIG'} --chip {chip}" + (" --psram" if psram else "")
    raise ProvisionError(f"{rep.summary()} (see `{how}`; --force writes it anyway)")


def compiled_config(data: bytes, cfg: dict, force: bool = False) -> bytes:
    """/config.node.json for the bytes of /config.json: validated here, defaults filled in
    (cyphy_node/cfgview.py reads it on the node); force: the node runs what fits of a
    config that does not fit its RAM instead of refusing it (`cyphy provision --force`)."""
    from cyphy_node import cfgview
    from cyphy_node import config as C

    return cfgview.compile_text(data, C.validate(cfg), force).encode()


def config_bytes(cfg: dict) -> bytes:
    return (json.dumps(cfg, indent=2) + "\n").encode()


def load_config_file(path: str) -> dict:
    """The node config in the file at path, as a dict; ProvisionError in one line naming
    what is wrong with the file (missing, unreadable, a directory, binary, not JSON, not a
    JSON object, a sim bench file) and what to give instead."""
    what = "give the node's config (JSON, docs/config.md; firmware/config.example.json is one)"
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except IsADirectoryError:
        raise ProvisionError(f"{path}: is a directory; {what}") from None
    except OSError as e:
        raise ProvisionError(f"{path}: {e.strerror or e}; {what}") from None
    if b"\0" in data[:4096] or data[:1] == b"\xe9":
        raise ProvisionError(f"{path}: is a binary file, not a config; {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProvisionError(f"{path}: is not UTF-8 text, not a config; {what}") from None
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise ProvisionError(f"config error: {path}: is not valid JSON ({e}); {what}") from None
    if not isinstance(cfg, dict):
        raise ProvisionError(f"config error: {path}: is JSON but not an object; {what}")
    if "plant" in cfg and "wiring" in cfg and "loops" not in cfg:
        raise ProvisionError(f"{path}: is a sim bench (plant and wiring: `cyphy sim start --bench`), "
                             f"not a node config; {what}")
    return cfg


def persisted_values(rec: object) -> dict[str, tuple[float, str]]:
    """{key: (value, "tune" | "saved")} a loop's persisted record puts in force at boot
    (the same reading as cyphy_node/params.load)."""
    out: dict[str, tuple[float, str]] = {}
    if not isinstance(rec, dict):
        return out
    if rec.get("ok") and rec.get("applied", True):
        g = rec
        if "kp" not in rec and isinstance(rec.get("rules"), dict):
            g = rec["rules"].get(rec.get("rule")) or {}
        for k in ("kp", "ki", "kd"):
            if isinstance(g.get(k), (int, float)):
                out[k] = (float(g[k]), "tune")
    saved = rec.get("saved")
    if isinstance(saved, dict):
        for k, v in saved.items():
            if k in PERSISTED_KEYS and isinstance(v, (int, float)):
                out[k] = (float(v), "saved")
    return out


def tuning_differences(tuned: dict, config: dict) -> dict[str, dict[str, dict]]:
    """{loop: {key: {"config", "persisted", "source"}}} where the node's persisted layer
    overrides a different value of this config (loops of the config only)."""
    diff: dict[str, dict[str, dict]] = {}
    for lp in config.get("loops", []):
        c = lp.get("controller", {})
        for k, (v, src) in persisted_values(tuned.get(lp.get("name"))).items():
            cv = c.get(k)
            if not isinstance(cv, (int, float)):
                continue
            if abs(float(cv) - v) > 1e-6 * max(1.0, abs(v)):
                diff.setdefault(lp["name"], {})[k] = {"config": cv, "persisted": v, "source": src}
    return diff


# Forget the persisted layer: the file, and the running firmware's copy of it (which it
# would write back at its next save). The loops keep their values until the node resets.
_CLEAR_TUNING = """import os
try:
    import __main__
    __main__.node.tuned.clear()
except Exception:
    pass
try:
    os.remove(%r)
except OSError:
    pass
""" % TUNING_PATH


def describe_tuning(diff: dict[str, dict[str, dict]]) -> str:
    return "; ".join(
        f"{lp}: " + ", ".join(f"{k} {d['persisted']:g} ({'autotune' if d['source'] == 'tune' else 'set --save'}) "
                              f"over the config's {d['config']:g}" for k, d in keys.items())
        for lp, keys in diff.items())


def check_tuning(dev: Device, config: dict, tuning: str | None, dry_run: bool,
                 warnings: list[str]) -> dict:
    """The node's persisted tuning against config: which values will be in force, and
    (tuning "clear") forget it. tuning None: keep it, with a warning when it differs."""
    raw = dev.read(TUNING_PATH)
    rep: dict = {"path": TUNING_PATH, "action": "none" if raw is None else "unchanged",
                 "differs": {}, "in_force": "config"}
    if raw is None:
        return rep
    try:
        tuned = json.loads(raw)
    except ValueError:
        tuned = None
    if not isinstance(tuned, dict):
        warnings.append(f"the node's {TUNING_PATH} is not a JSON object: the node ignores it; "
                        "--clear-tuning removes it")
        tuned = {}
    diff = tuning_differences(tuned, config)
    rep["differs"] = diff
    if tuning == "clear":
        rep["action"] = "would clear" if dry_run else "cleared"   # by clear_tuning()
        return rep
    if diff:
        rep["in_force"] = "persisted"
        rep["action"] = "kept"
        if tuning is None:
            warnings.append(f"the node's persisted tuning stays in force after a reset: {describe_tuning(diff)}. "
                            "--clear-tuning uses the config's values; --keep-tuning keeps them "
                            "without this warning")
    return rep


def clear_tuning(dev: Device) -> None:
    dev.exec(_CLEAR_TUNING)


def write_user_modules(dev: Device, config: dict, user_dir: Path | None,
                       dry_run: bool) -> dict[str, str]:
    """/lib/cyphy_user/<module>.mpy for each user block (compiled from <module>.py in
    user_dir), each written atomically when it differs: {node path: action}."""
    from cyphy import userblock

    try:
        files = userblock.node_files(config, user_dir)
    except userblock.UserBlockError as e:
        raise ProvisionError(str(e)) from None
    out = {}
    if files and not dry_run:
        dev.mkdirs(["/lib", userblock.NODE_DIR])
    for path, data in sorted(files.items()):
        if dev.sha256(path) == hashlib.sha256(data).hexdigest():
            out[path] = "unchanged"
        elif dry_run:
            out[path] = "would write"
        else:
            dev.write_atomic(path, data)
            out[path] = "written"
    return out


def new_key_hex() -> str:
    return _secrets.token_bytes(32).hex()


def provision(dev: Device, name: str | None, config: dict | None = None,
              wifi: tuple[str, str] | None = None, key_hex: str | None = None,
              key_source: str = "given", new_key: bool = False, dry_run: bool = False,
              progress: Callable[[int, int, str], None] | None = None, force: bool = False,
              config_file: str | None = None, state: dict | None = None,
              tuning: str | None = None, user_dir: Path | None = None) -> dict:
    """Provision the node on dev. name: the node's name (None: keep the config's);
    config: the config (None: keep the node's, renamed); wifi: (ssid, password) to set
    (None: keep); key_hex: the key to set (None: keep the node's, else the host's stored
    key for the name, else a new one; new_key=True: always a new one). A new config must
    fit the node's RAM (check_fit) unless force. Returns the report (what changed; never
    a secret). state: a dict whose "phase" says how far it got (for a caller interrupted
    by Ctrl-C to say what the node holds): "check", "staged" (nothing written to the node
    yet), "config" (sending /config.json.tmp: the previous file is whole), "config-rename",
    "config-done", "secrets" (the node's /secrets.json: previous or new, whole),
    "secrets-done", "done". tuning: what to do with the node's persisted tuning (an
    applied autotune, `set --save` values) where it differs from the config: None keeps it
    (precedence: it wins at boot) with a warning, "keep" keeps it, "clear" forgets it.
    user_dir: where the config's user blocks' modules are (default: config_file's
    directory)."""
    if user_dir is None and config_file:
        user_dir = Path(config_file).resolve().parent
    if tuning not in (None, "keep", "clear"):
        raise ProvisionError(f"tuning: keep or clear, not {tuning!r}")
    if state is None:
        state = {}
    state["phase"] = "check"
    fit_warnings: list[str] = []
    if config is not None:
        config = check_config(config, name)
        chip = target_chip(dev)
        check_chip(config, chip)  # before anything is written
        if not force:
            fit_warnings = check_fit(dev, config, chip, config_file, user_dir)
    if key_hex is not None:
        try:
            key_hex = keys.normalise_hex(key_hex)
        except ValueError as e:
            raise ProvisionError(f"key ({key_source}): {e}") from None
    if wifi is not None:
        ssid, password = wifi
        if not 1 <= len(ssid.encode()) <= 32:
            raise ProvisionError("Wi-Fi SSID: must be 1 to 32 bytes")
        if len(password.encode()) > 64:
            raise ProvisionError("Wi-Fi password: must be at most 64 bytes")
    warnings: list[str] = list(fit_warnings)

    # ---- config (not a secret: read back whole, to compare and to learn the old name)
    old = dev.read(CONFIG_PATH)
    cur = None
    if old is not None:
        try:
            cur = json.loads(old)
        except ValueError:
            cur = None
    old_name = cur.get("name") if isinstance(cur, dict) and isinstance(cur.get("name"), str) else None
    config_data = None
    if config is None:
        if old is None:
            if name is None:
                raise ProvisionError("the node has no /config.json: give --name (and --config)")
            config = check_config(minimal_config(name), None)
            warnings.append("the node had no config: wrote one with no channels and no loops")
        elif not isinstance(cur, dict):
            raise ProvisionError("the node's /config.json is not a valid JSON object: give --config")
        else:
            try:
                config = check_config(cur, name)
            except ProvisionError as e:
                raise ProvisionError(f"the node's /config.json: {e}; give --config") from None
            if config == cur:
                config_data = old  # same content: keep the node's bytes (and formatting)
    name = config["name"]
    from cyphy.client import comms_timeout_warning

    w = comms_timeout_warning(config.get("comms_timeout_ms"))
    if w:
        warnings.append(w)
    if config_data is None:
        config_data = config_bytes(config)
    cfg_sha = hashlib.sha256(config_data).hexdigest()
    cfg_action = "unchanged" if old == config_data else "written"

    # ---- key: given > the node's > the host's copy for this name > a new one
    dev._helper("_cysec", SEC_SRC)
    host_hex = keys.load_key_hex(name)
    renamed_hex = None
    if host_hex is None and old_name and old_name != name:
        renamed_hex = keys.load_key_hex(old_name)  # a renamed node: its key may be kept here
    cand = key_hex or host_hex or renamed_hex
    q = _sec(dev, None, None, cand, False)
    runs_key, runs_file_key = running_key(dev)
    held_match = None  # the node's key, when it is another key this host holds
    if q["has_key"] and not q["same_key"] and key_hex is None:
        # a key change not confirmed yet (keys.NAME.pending), or keys under the old name
        others = keys.load_key_hexes(name)
        if old_name and old_name != name:
            others += keys.load_key_hexes(old_name)
        for h in [h for h in dict.fromkeys(others) if h != cand][:4]:
            q2 = _sec(dev, None, None, h, False)
            if q2["same_key"]:
                cand, q, held_match = h, q2, h
                break
    if new_key:
        want, source = new_key_hex(), "generated"
    elif key_hex is not None:
        want, source = key_hex, key_source
    elif held_match is not None:
        want, source = held_match, "host"  # the node has a key this host holds: it is the one
    elif q["has_key"] and renamed_hex is not None and q["same_key"]:
        want, source = renamed_hex, "host"  # the host's copy follows the new name
    elif q["has_key"]:
        want, source = None, "node"  # kept on the node as it is
        if host_hex is None:
            warnings.append(f"kept the node's key, but this host has no copy of it: give --key-file "
                            f"or --new-key so that cyphy set/get/monitor can talk to {name}")
        elif not q["same_key"]:
            warnings.append(f"kept the node's key, which differs from the one this host keeps for "
                            f"{name}: give --key-file or --new-key to settle it")
    elif host_hex is not None:
        want, source = host_hex, "host"
    else:
        want, source = new_key_hex(), "generated"
    set_key = None if want is None or (q["has_key"] and q["same_key"] and want == cand) else want
    # ---- two-phase key change (cyphy.keys): before the node is written, this host keeps
    # every key the node may boot with or run from here on, under its new name: the key it
    # has now (when the host knows it) and the one it gets. The old one is dropped only
    # once a session verifies the new one (keys.confirm), so a power cut or a killed host
    # at any moment leaves a node this host can reach.
    node_hex = cand if q["has_key"] and q["same_key"] else None
    if not dry_run:
        for k in (node_hex, want):
            if k is not None:
                keys.stage(name, k)
    state["phase"] = "staged"
    wifi_d = {"ssid": wifi[0], "password": wifi[1]} if wifi is not None else None

    report = {
        "port": dev.port,
        "name": name,
        "dry_run": dry_run,
        "config": {"path": CONFIG_PATH, "action": cfg_action, "bytes": len(config_data)},
        "secrets": {"path": SECRETS_PATH, "action": "unchanged"},
        "key": {"source": source, "changed": False, "host_file": None, "host_file_changed": False},
        "wifi": {"ssid": wifi[0] if wifi else q["ssid"], "changed": False,
                 "password_set": bool(wifi[1]) if wifi else q["has_password"]},
        "warnings": warnings,
        "node_had_key": bool(q["has_key"]),
        "node_runs_key": runs_key,           # None: its firmware is not running
        "node_runs_file_key": runs_file_key,
    }

    # ---- the persisted tuning against this config: which values the node will run
    report["tuning"] = check_tuning(dev, config, tuning, dry_run, warnings)

    # ---- the config's user blocks' modules (docs/user-blocks.md), before the config that
    # imports them: a node never boots a config whose module is missing
    report["user_modules"] = write_user_modules(dev, config, user_dir, dry_run)

    # ---- write: config, then secrets (each atomic; a power loss between them leaves the
    # new config with the old secrets, a valid node)
    if cfg_action == "written":
        if dry_run:
            report["config"]["action"] = "would write"
        else:
            cb = None
            if progress is not None:
                def cb(n: int) -> None:
                    progress(n, len(config_data), CONFIG_PATH)
            # write_atomic's two steps, so that an interrupted caller knows which happened
            state["phase"] = "config"
            dev.send(CONFIG_PATH + ".tmp", config_data, cb)
            state["phase"] = "config-rename"
            dev.rename([(CONFIG_PATH + ".tmp", CONFIG_PATH)])
            state["phase"] = "config-done"
            if dev.sha256(CONFIG_PATH) != cfg_sha:
                raise DeviceError(f"{dev.port}: {CONFIG_PATH} does not read back as written")
    # ---- the compiled config (cyphy_node/cfgview.py): what the node boots from, so that it
    # never loads the validator; written whenever it does not match /config.json's bytes
    # --force is kept while the config stays the same (a later Wi-Fi or key change): the
    # node's compiled file is then the forced one, byte for byte
    from cyphy_node import cfgview
    from cyphy_node import config as C

    valid = C.validate(config)
    compiled = cfgview.compile_text(config_data, valid, force).encode()
    on_node = dev.sha256(COMPILED_PATH)
    if not force:
        kept = cfgview.compile_text(config_data, valid, True).encode()
        if on_node == hashlib.sha256(kept).hexdigest():
            compiled = kept
    if on_node != hashlib.sha256(compiled).hexdigest():
        report["config"]["compiled"] = "would write" if dry_run else "written"
        if not dry_run:
            dev.write_atomic(COMPILED_PATH, compiled)  # the same config, compiled: the phase stays
    else:
        report["config"]["compiled"] = "unchanged"
    if not dry_run and (set_key is not None or wifi_d is not None):
        state["phase"] = "secrets"
    w = _sec(dev, set_key, wifi_d, cand, not dry_run)
    if state["phase"] == "secrets":
        state["phase"] = "secrets-done"
    if w["changed"]:
        if dry_run:
            report["secrets"]["action"] = "would write"
        else:
            if dev.sha256(SECRETS_PATH) != w.get("sha256"):
                raise DeviceError(f"{dev.port}: {SECRETS_PATH} does not read back as written")
            report["secrets"]["action"] = "written"
    report["key"]["changed"] = bool(w["key_changed"])
    report["wifi"]["changed"] = bool(w["wifi_changed"])

    # ---- the node's /secrets.json verifiably holds `want`: it becomes the host's primary
    # key; the previous one is kept until a session with the node confirms the new one (the
    # node runs its old key until it reboots)
    if want is not None and host_hex != want:
        report["key"]["host_file_changed"] = True
    if want is not None and not dry_run:
        keys.commit(name, want)
    if want is not None or host_hex is not None:
        report["key"]["host_file"] = str(keys.key_path(name))
    # how many keys this host holds for the node (2 or more: a key change not yet confirmed)
    report["host_keys_held"] = len(keys.load_key_hexes(name))
    if report["tuning"]["action"] == "cleared":
        clear_tuning(dev)                 # last: an interrupted provision keeps it
    state["phase"] = "done"
    return report


# What the running firmware uses, as opposed to the file it boots from: whether its
# protocol endpoint has a key, and whether that is /secrets.json's. Booleans only.
RUNNING_SRC = """\
def _cyrun():
 try:
  k = node.comms.key
 except Exception:
  return '?'
 try:
  import json
  from cyphy_node import proto
  with open('/secrets.json') as f:
   s = json.load(f).get('key')
  s = proto.key_from_hex(s)._ipad == k._ipad if s and k is not None else False
 except Exception:
  s = False
 return '%d %d' % (k is not None, s)
print(_cyrun())
del _cyrun
"""


def running_key(dev: Device) -> tuple[bool | None, bool | None]:
    """(the running node has a key, it is the one in its /secrets.json); None, None when
    the firmware is not running (no `node` in the REPL)."""
    try:
        out = dev.exec(RUNNING_SRC).split()
    except DeviceError:
        return None, None
    if len(out) != 2:
        return None, None
    return out[0] == "1", out[1] == "1"


def _sec(dev: Device, key: str | None, wifi: dict | None, cand: str | None, write: bool) -> dict:
    out = dev.exec(f"_cysec({SECRETS_PATH!r}, {key!r}, {wifi!r}, {cand!r}, {write!r})")
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeviceError(f"{dev.port}: unexpected answer from the node about {SECRETS_PATH}") from None
