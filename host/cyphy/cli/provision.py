"""`cyphy provision`: a node's name, config, key and Wi-Fi credentials."""

from __future__ import annotations

import os
import sys

import click

from cyphy.cli.common import Interrupted, emit
from cyphy.cli.deploy import PORT_HELP, SOFT_RESET_HELP, device_errors, open_device, progress_bar
from cyphy.cli.flash import again, sigint_held


def _close_now(dev) -> None:
    """Close the port at once after Ctrl-C: no more exchanges with the node (a transfer it
    was in the middle of ends by itself, and the next command's connection recovers it)."""
    if dev is None:
        return
    try:
        dev._helpers.clear()  # nothing to delete: the node may be mid-transfer
    except AttributeError:
        pass
    dev.close()


def _interrupted(state: dict, port: str) -> str:
    """One line: what the node holds after Ctrl-C in this phase (cyphy.provision)."""
    ph = state.get("phase")
    cmd = again()
    if ph in ("open", "check", "staged"):
        return f"nothing was written to {port}: the node is untouched"
    if ph == "config":
        return (f"{port} keeps its previous files (the new /config.json was not in place yet); "
                f"run `{cmd}` again")
    if ph == "config-rename":
        return (f"{port} has its previous /config.json or the new one, each whole (a rename), and "
                f"its previous key; run `{cmd}` again")
    if ph in ("config-done", "secrets"):
        sec = ("its previous key" if ph == "config-done" else
               "its previous or its new /secrets.json, whole (this host holds both keys)")
        return f"{port} has its new /config.json and {sec}; run `{cmd}` again to finish"
    if ph in ("secrets-done", "done"):
        return (f"{port} is provisioned; it runs its previous config and key until it resets "
                f"(this host accepts both): `cyphy provision --port {port} --reset`")
    if ph == "reset":
        return (f"{port} is provisioned and was resetting: it boots with the new settings "
                f"(this host accepts the old and the new key)")
    if ph == "confirm":
        return (f"{port} is provisioned and reset, running the new settings; this host keeps the "
                f"old key too until the next cyphy get/set/monitor confirms the new one")
    return f"{port}: state unknown; run `{cmd}` again"


def _effect(r: dict, port: str) -> str:
    """When what was written takes effect on the node, in one sentence."""
    if r["dry_run"]:
        return "nothing written"
    cfg = r["config"]["action"] == "written"
    key = r["key"]["changed"]
    wifi = r["wifi"]["changed"]
    stale = r.get("node_runs_file_key") is False  # it ran another key than its file's
    if not (cfg or key or wifi):
        if r.get("reset"):
            if stale and r.get("key_confirmed"):
                return "reset: the node runs the key in its /secrets.json (it answered with it)"
            return "reset: the node runs these settings"
        if stale:
            return ("nothing changed; the node still runs its previous key until it resets "
                    f"(this host accepts both): `cyphy provision --port {port} --reset`")
        return "nothing changed"
    what = ", ".join(w for w, c in (("config", cfg), ("key", key), ("Wi-Fi", wifi)) if c)
    if r.get("reset"):
        if key and r.get("key_confirmed") and r.get("host_keys_held", 0) <= 1:
            return f"reset: the node runs the new {what} (it answered with the new key)"
        if key:
            return (f"reset: the node boots with the new {what}; this host keeps the old key too "
                    f"until a session confirms the new one")
        return f"reset: the node runs the new {what}"
    if key and r.get("node_runs_key") is False:
        prev = [w for w in ("config", "Wi-Fi") if w in what]
        s = ("the node runs without a key" + (f" and with its previous {' and '.join(prev)}" if prev else "")
             + " until it resets (meanwhile cyphy get/set refuse it unless --unprovisioned)")
    elif key and r.get("node_runs_key") is None:
        s = (f"the node's firmware is not running: it starts with the new {what} at its next "
             f"reset; this host accepts the old and the new key until then")
    else:
        s = f"the node runs its previous {what} until it resets"
        if key:
            s += "; this host accepts both keys until then"
    return s + f": `cyphy provision --port {port} --reset`, or power it off and on"


def _secret_file(path: str, what: str) -> str:
    from cyphy.provision import ProvisionError

    hint = ("give a text file holding the key in hex (16 to 64 bytes)" if what == "key"
            else f"give a text file holding the {what}")
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError as e:
        raise ProvisionError(f"{what} file {path}: {e.strerror or e}; {hint}") from None
    try:
        if b"\0" in data:
            raise UnicodeError
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeError:
        raise ProvisionError(f"{what} file {path}: is binary, not text; {hint}") from None


def _wifi_password(password_file: str | None) -> str:
    from cyphy.provision import ProvisionError

    if password_file:
        return _secret_file(password_file, "Wi-Fi password")
    env = os.environ.get("CYPHY_WIFI_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise ProvisionError("no Wi-Fi password: give --wifi-password-file or $CYPHY_WIFI_PASSWORD "
                             "(there is no terminal to ask on)")
    return click.prompt("Wi-Fi password", hide_input=True, confirmation_prompt=True, err=True,
                        default="", show_default=False)


def _key(key_file: str | None) -> tuple[str | None, str]:
    if key_file:
        return _secret_file(key_file, "key"), "file"
    if os.environ.get("CYPHY_KEY"):
        return os.environ["CYPHY_KEY"], "env"
    if os.environ.get("CYPHY_KEY_FILE"):
        return _secret_file(os.environ["CYPHY_KEY_FILE"], "key"), "file"
    return None, "node"


@click.command()
@click.option("-p", "--port", required=True, metavar="PORT", help=PORT_HELP)
@click.option("--name", help="The node's name (1-32 letters, digits, _ or -, starting with a "
                             "letter); set into the config. Default: the config's.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="The node config (JSON, docs/config.md); validated here first. Default: keep "
                   "the node's (renamed), or a config with no loops if it has none.")
@click.option("--wifi-ssid", help="Wi-Fi network to join (with comms.udp). Default: keep the node's.")
@click.option("--wifi-password-file", type=click.Path(dir_okay=False),
              help="File holding the Wi-Fi password. Else $CYPHY_WIFI_PASSWORD, else a hidden prompt.")
@click.option("--key-file", type=click.Path(dir_okay=False),
              help="The node's key (hex, 16-64 bytes). Else $CYPHY_KEY or $CYPHY_KEY_FILE; else the "
                   "node keeps its key; else the key this host keeps for the name; else a new one.")
@click.option("--new-key", is_flag=True, help="Give the node a new random 32-byte key.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--force", is_flag=True, help="Write a config even if the node would not fit the "
                                            "target's RAM (see `cyphy check`).")
@click.option("--reset", is_flag=True, help="Hard-reset the node afterwards so it boots with the new settings.")
@click.option("--soft-reset", is_flag=True, help=SOFT_RESET_HELP)
@click.option("--baud", type=click.IntRange(min=1), default=115200, show_default=True, help="Serial line rate.")
@click.option("--keep-tuning", is_flag=True,
              help="Keep the node's persisted tuning (autotune, set --save) where it differs "
                   "from the config: it stays in force (the default, without a warning).")
@click.option("--clear-tuning", is_flag=True,
              help="Forget the node's persisted tuning: the config's setpoints and gains are "
                   "in force after the reset.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (never a secret).")
@device_errors
def provision(port: str, name: str | None, config_file: str | None, wifi_ssid: str | None,
              wifi_password_file: str | None, key_file: str | None, new_key: bool, dry_run: bool,
              force: bool, reset: bool, soft_reset: bool, baud: int, keep_tuning: bool,
              clear_tuning: bool, as_json: bool) -> None:
    """Give a node its name, config (/config.json), key and Wi-Fi credentials
    (/secrets.json) over the REPL. Each file is written to PATH.tmp, verified by its
    SHA-256 read back on the node, then renamed: a power loss keeps the previous file.
    A file that would not change is not written, so running it twice changes nothing.
    The key is also kept on this host ($CYPHY_HOME/keys/NAME.key, mode 0600) for
    cyphy set/get/monitor. Secrets are never printed.

    A key change is two-phase: this host keeps the new key before the node gets it, and
    the old one too until a session with the node verifies the new one (--reset opens one
    at once; else the next cyphy set/get/monitor does), so a power cut or a killed cyphy
    never leaves a node whose key this host does not hold.

    The node's persisted tuning (an applied autotune, values kept with `cyphy set --save`)
    wins over the config's setpoints and gains at boot: where it differs from the config,
    provision says so and keeps it; --clear-tuning forgets it, --keep-tuning keeps it
    without the warning.

    A comms_timeout_ms under 200 ms gets a warning: the host's heartbeat (at most every
    50 ms, four per timeout) cannot keep it alive.

    A new config is first checked as `cyphy check` does, for the node's chip (and PSRAM
    when its MicroPython heap is 512 KB or more; a sim node: its own heap): one that would
    not fit the node's RAM is refused unless --force.

    The node reads its files at boot: the output's "takes effect:" line says when what was
    written takes effect (without --reset the node runs its previous config and key, or
    none, until it resets; with --reset it answers with the new key).

    Ctrl-C stops at once, with one line saying what the node holds (untouched, its
    previous files, the new config and which key) and the command to run again.

    Exit codes: 0 done, 1 failed (bad config: the message names the field; a config that
    does not fit; no port; a write that did not verify), 2 usage, 130 interrupted."""
    from cyphy.provision import check_config, load_config_file, provision as run

    config = None
    if config_file:
        config = check_config(load_config_file(config_file), name)  # before touching the node
    elif name is not None:
        check_config({"schema": 1, "name": name, "comms_timeout_ms": 0, "channels": [], "loops": []}, None)
    if key_file and new_key:
        raise click.UsageError("give either --key-file or --new-key, not both")
    if keep_tuning and clear_tuning:
        raise click.UsageError("give either --keep-tuning or --clear-tuning, not both")
    tuning = "keep" if keep_tuning else "clear" if clear_tuning else None
    key_hex, key_source = (None, "generated") if new_key else _key(key_file)
    if wifi_password_file and not wifi_ssid:
        raise click.UsageError("--wifi-password-file needs --wifi-ssid")
    try:
        wifi = (wifi_ssid, _wifi_password(wifi_password_file)) if wifi_ssid else None
    except (KeyboardInterrupt, click.exceptions.Abort):  # Ctrl-C at the password prompt
        raise Interrupted(f"nothing was written to {port}: the node is untouched") from None

    state: dict = {"phase": "open"}
    dev = None
    try:
        with progress_bar(not as_json, "provision") as cb:
            dev = open_device(port, baud, soft_reset)
            try:
                report = run(dev, name, config, wifi, key_hex, key_source, new_key, dry_run, cb,
                             force=force, config_file=config_file, state=state, tuning=tuning)
                if reset and not dry_run:
                    from cyphy.deploy import boot_lines

                    state["phase"] = "reset"
                    report["boot"] = boot_lines(dev.reset())
                    report["reset"] = True
                else:
                    report["reset"] = False
            except KeyboardInterrupt:
                with sigint_held():
                    _close_now(dev)
                dev = None
                raise
            finally:
                if dev is not None:
                    dev.close()
        if report["reset"] and (report["key"]["changed"] or report["host_keys_held"] > 1
                                or report.get("node_runs_file_key") is False):
            state["phase"] = "confirm"
            report["host_keys_held"], report["key_confirmed"] = _confirm_key(port, report["name"])
    except KeyboardInterrupt:
        raise Interrupted(_interrupted(state, port)) from None
    report["takes_effect"] = _effect(report, port)
    emit(report, as_json, _text)
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)


def _confirm_key(port: str, name: str) -> tuple[int, bool]:
    """After a reset with a new key: a session with the node confirms the key change, so
    that the host drops the old key (cyphy.keys.confirm). Best effort: unconfirmed, the
    host keeps both and the next session confirms. Returns the keys now held for name, and
    whether the node answered (with a key this host holds: the new one, after the reset)."""
    from cyphy import keys
    from cyphy.api import connect

    url = port if "://" in port else f"serial://{port}"
    ok = False
    try:
        with connect(url, timeout=3.0):
            ok = True
    except Exception:  # noqa: BLE001 - no firmware, a busy port...: confirmed later
        pass
    return len(keys.load_key_hexes(name)), ok


def _text(r: dict) -> str:
    k, w = r["key"], r["wifi"]
    key = {"node": "kept the node's", "host": "this host's copy", "generated": "new",
           "file": "from the key file", "env": "from $CYPHY_KEY"}.get(k["source"], k["source"])
    lines = [
        f"{r['config']['path']}: {r['config']['action']}",
        f"{r['secrets']['path']}: {r['secrets']['action']} (key: {key}, "
        f"{'changed' if k['changed'] else 'unchanged'}; Wi-Fi: "
        + (f"{w['ssid']!s}, {'changed' if w['changed'] else 'unchanged'}" if w["ssid"] else "none") + ")",
    ]
    for path, action in (r.get("user_modules") or {}).items():
        lines.append(f"{path}: {action} (user block module)")
    t = r.get("tuning") or {}
    if t.get("action") not in (None, "none"):
        from cyphy.provision import describe_tuning

        what = {"cleared": "cleared: the config's values are in force after a reset",
                "would clear": "would clear: the config's values would be in force",
                "kept": "kept, in force over the config (" + describe_tuning(t.get("differs", {})) + ")",
                "unchanged": "kept (it agrees with the config)"}.get(t["action"], t["action"])
        lines.append(f"{t['path']} (persisted tuning): {what}")
    if k["host_file"]:
        upd = ("would update" if r["dry_run"] else "updated") if k["host_file_changed"] else "unchanged"
        if r.get("host_keys_held", 0) > 1:
            upd += "; the previous key is kept until the node answers with the new one"
        lines.append(f"host key: {k['host_file']} ({upd})")
    if r.get("takes_effect"):
        lines.append(f"takes effect: {r['takes_effect']}")
    s = f"node {r['name']} on {r['port']}"
    if r["dry_run"]:
        s += ": dry run, nothing written"
    elif r["config"]["action"] == "unchanged" and r["secrets"]["action"] == "unchanged":
        s += ": already provisioned, nothing written"
    else:
        s += ": provisioned"
    if r.get("reset"):
        s += "; node reset"
    lines.append(s)
    lines += [f"  {b}" for b in r.get("boot", [])]
    return "\n".join(lines)
