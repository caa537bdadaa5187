"""The Python API: `cyphy.connect(url)` gives a Node to read telemetry from, set and get
parameters on, and (over serial) run code on. Links are chosen by URL scheme, like
pyserial's serial_for_url:

    with cyphy.connect("sim://oven") as node:          # or serial:///dev/ttyUSB0, udp://10.0.0.7
        node.set("oven.setpoint", 60)                  # (mqtt://BROKER/GROUP/EDGE/DEVICE: a node
                                                       # behind a gateway, cyphy.fleet.MqttNode)
        for sample in node.telemetry(period_ms=100):
            print(sample["loops"]["oven"]["measurement"])
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import codec as P

from .client import CommandRejected, LinkStats, ProtocolError, Session
from .links import LinkError, node_opener, open_link

if TYPE_CHECKING:
    from .fleet import MqttNode

__all__ = ["connect", "Node", "CommandRejected", "ProtocolError", "LinkError", "resolve_key"]


def resolve_key(key: P.Key | bytes | str | None = None, key_file: str | os.PathLike | None = None) -> P.Key | None:
    """The key to use, from (in order) the argument, a key file, $CYPHY_KEY (hex) or
    $CYPHY_KEY_FILE; None: look it up by node name in $CYPHY_HOME/keys after HELLO."""
    if isinstance(key, P.Key):
        return key
    if isinstance(key, (bytes, bytearray)):
        return P.Key(bytes(key))
    if isinstance(key, str):
        return _key_text(key, "the key given")
    path = key_file or os.environ.get("CYPHY_KEY_FILE")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise LinkError(f"key file {path}: {e.strerror}") from None
        return _key_text(text, f"key file {path}")
    if os.environ.get("CYPHY_KEY"):
        return _key_text(os.environ["CYPHY_KEY"], "$CYPHY_KEY")
    return None


def _key_text(text: str, where: str) -> P.Key:
    try:
        return P.key_from_hex(text)
    except ValueError as e:
        raise LinkError(f"{where}: {e}") from None


class _StoredKeys:
    """Session.key_for and on_key over the key store ($CYPHY_HOME/keys, cyphy.keys): every
    key kept for a node's name (during a key change, the old and the new one), and, when
    the node's HELLO verifies with one, keys.confirm() (a key change is then complete)."""

    def __init__(self) -> None:
        self._hex: dict[P.Key, str] = {}

    def __call__(self, name: str) -> list[P.Key]:
        from . import keys

        out = []
        for h in keys.load_key_hexes(name):
            k = P.key_from_hex(h)
            self._hex[k] = h
            out.append(k)
        return out

    def confirmed(self, name: str, key: P.Key) -> None:
        from . import keys

        h = self._hex.get(key)
        if h is not None:
            try:
                keys.confirm(name, h)
            except keys.KeyStoreError:
                pass  # a read-only key store: the change is confirmed at a later session


class Node:
    """A connected node (see connect())."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.hello = session.open()
        session.sync_time()  # the node dates its fault records with the host's clock

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    @property
    def name(self) -> str:
        return self.hello.name

    @property
    def loops(self) -> list[str]:
        return list(self.hello.loops)

    @property
    def link_stats(self) -> LinkStats:
        return self.session.stats

    def set(self, path: str, value: float | str) -> None:
        """node.set("oven.setpoint", 60); keys: setpoint, mode ("auto"/"manual"), kp, ki,
        kd, output (manual). Acknowledged by the node; CommandRejected says why not."""
        self.set_many([(path, value)])

    def set_param(self, path: str, value: float) -> None:
        """A block's parameter: node.set_param("ratio1.ratio", 1.5) (docs/config.md, "Blocks
        and tasks": which each type has). Not persisted: the config's value at the next
        boot."""
        self.session.set_param(path, value)

    def set_many(self, assignments: list[tuple[str, float | str]], save: bool = False) -> None:
        """node.set_many([("oven.setpoint", 60), ("oven.kp", 3.5)]): all applied between two
        control passes, or none (CommandRejected names the one refused). save=True: also
        persisted on the node (setpoints and gains), in force after a reboot over the
        config's values (docs/control.md, "Where a loop's parameters come from")."""
        self.session.set_many([(*_split(path), value) for path, value in assignments], save)

    def tune(self, loop: str, rule: str = "auto", amplitude: float = 0.0,
             hysteresis: float = 0.0, timeout_s: float = 0, apply: bool = True,
             progress: Callable[[dict], None] | None = None, poll_s: float = 0.5) -> dict:
        """Run a relay autotune of loop on the node and wait for it: the result, with at
        least ku, pu_s, model, rule, why, kp, ki, kd, stable, reason and applied (an
        unstable or timed-out run is never applied). progress(status) is called while it
        runs ({"cycles": [done, wanted], "period_s", "amplitude"}). Ctrl-C (or any error
        here) stops the run: the node returns the loop to its previous gains and output;
        so does a host that goes away (its session ends)."""
        self.session.tune_start(loop, amplitude, hysteresis, rule, timeout_s, apply)
        try:
            while True:
                st = self.get(f"{loop}.tune")
                if not st.get("running"):
                    r = dict(st.get("result") or {})
                    r.setdefault("pu_s", r.get("pu"))
                    return r
                if progress is not None:
                    progress(st)
                time.sleep(poll_s)
        except BaseException:
            try:
                self.session.tune_abort(loop)
            except Exception:  # noqa: BLE001 - the link may be what failed
                pass
            raise

    def forget_tuning(self, loop: str) -> None:
        """Forget loop's persisted layer (an applied autotune, values kept with set
        --save): the values that came from it return to the config's, now and at boot;
        runtime changes stay."""
        self.session.tune_forget(loop)

    def get(self, path: str) -> Any:
        """node.get("oven.measurement"), node.get("oven") (the loop's state), or "state",
        "stats", "faults", "info"."""
        return self.session.read(path)

    def telemetry(self, period_ms: int = 100, batch: int = 1, stats_s: int = 1,
                  timeout: float = 5.0) -> Iterator[dict]:
        """Samples as they come: {"t_ms", "loops": {name: {setpoint, measurement, output,
        status}}}. Gaps (lost frames) are counted in link_stats.lost."""
        self.session.subscribe(period_ms, batch, stats_s)
        return self.session.samples(timeout)

    def stats(self) -> dict[str, Any] | None:
        """The loops' statistics from the last STATS frame (while subscribed)."""
        return self.session.node_stats

    def exec(self, code: str, timeout: float = 10.0) -> str:
        """Run Python on the node (serial links only: the REPL is there); its output."""
        run = getattr(self.session.link, "exec", None)
        if run is None:
            raise LinkError(f"{self.session.link.describe()}: exec needs the node's serial "
                            f"console (serial:// or sim://)")
        self.session.close_session()
        try:
            return run(code, timeout)
        finally:
            self.session.reopen()
            self.hello = self.session.hello


def _split(path: str) -> tuple[str, str]:
    loop, dot, key = path.partition(".")
    if not dot or not loop or not key:
        raise CommandRejected(P.R_UNKNOWN_TARGET, f"{path!r}: write loop.key, e.g. oven.setpoint")
    return loop, key


def connect(url: str, key: P.Key | bytes | str | None = None, key_file: str | None = None,
            timeout: float = 2.0, unprovisioned: bool = False) -> Node | MqttNode:
    """Open a session with the node at url (serial:///dev/ttyUSB0, udp://host[:port],
    sim://NAME). The key comes from key/key_file, $CYPHY_KEY/$CYPHY_KEY_FILE, or the
    keys kept by `cyphy provision` (found by the node's name). A node without a key is
    refused (ProtocolError) when this host holds a key for its name, from any of these:
    unprovisioned=True talks to it anyway (a node you know is not provisioned yet).

    mqtt[s]://HOST[:PORT]/GROUP/EDGE/DEVICE: a node behind a `cyphy gateway`, through the
    broker (a cyphy.fleet.MqttNode, Sparkplug B): the gateway holds the session and key, so
    key, key_file and unprovisioned do not apply; timeout bounds the wait for its birth."""
    opener = node_opener(url)   # URLs without a frame link (cyphy.links.LINK_TYPES)
    if opener is not None:
        return opener(url, timeout=timeout)
    k = resolve_key(key, key_file)
    link = open_link(url)
    store = _StoredKeys()
    try:
        session = Session(link, k, timeout=timeout, key_for=store,
                          unprovisioned=unprovisioned, on_key=store.confirmed)
    except Exception:
        link.close()
        raise
    try:
        return Node(session)
    except Exception:
        session.close()   # the hub stops reading the link, then the link is closed
        raise
