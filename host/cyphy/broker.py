"""An MQTT broker as a child process, started and stopped by the project (issue 16).

Two kinds, neither needs root or a system service:

* ``"embedded"``: amqtt (pure Python, from PyPI), run as ``python -m cyphy.broker``.
  For tests and demos, not for production.
* ``"mosquitto"``: the Mosquitto binary (Debian package, tools/install-debian-packages) with a
  generated config file in a private directory.

``"auto"`` picks Mosquitto when it is installed, else the embedded broker::

    with Broker() as broker:          # 127.0.0.1, a free port
        print(broker.url)             # mqtt://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

Kind = Literal["embedded", "mosquitto", "auto"]
KINDS: tuple[str, ...] = ("embedded", "mosquitto")
MOSQUITTO_HINT = "apt-get install mosquitto (or tools/install-debian-packages), or use the embedded broker"
_SYSTEM_MOSQUITTO = "/usr/sbin/mosquitto"


class BrokerError(Exception):
    """A broker could not be found, started or reached; the message says what to do."""


class _ExitedOnStart(BrokerError):
    pass


def mosquitto_path() -> str | None:
    """The mosquitto binary on PATH or in /usr/sbin (Debian), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return _SYSTEM_MOSQUITTO if os.access(_SYSTEM_MOSQUITTO, os.X_OK) else None


def embedded_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def available_kinds() -> list[str]:
    """The broker kinds this machine can start, embedded first."""
    kinds = []
    if embedded_available():
        kinds.append("embedded")
    if mosquitto_path():
        kinds.append("mosquitto")
    return kinds


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    # SO_REUSEADDR as the brokers use it: a port left in TIME_WAIT by a stopped
    # broker is free again (restart), a port with a listener is not.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def mosquitto_password_line(user: str, password: str) -> str:
    """A mosquitto_passwd line (PBKDF2-SHA512, ``$7$``, as Mosquitto 2.x writes it)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    b64 = base64.b64encode
    return f"{user}:$7$101${b64(salt).decode()}${b64(digest).decode()}"


def amqtt_password_line(user: str, password: str) -> str:
    """A line of amqtt's FileAuthPlugin password file (argon2)."""
    from pwdlib.hashers.argon2 import Argon2Hasher

    return f"{user}:{Argon2Hasher().hash(password)}"


def _resolve(kind: str) -> str:
    if kind == "auto":
        if mosquitto_path():
            return "mosquitto"
        kind = "embedded"
    if kind == "mosquitto" and not mosquitto_path():
        raise BrokerError(f"Mosquitto is not installed: {MOSQUITTO_HINT}")
    if kind == "embedded" and not embedded_available():
        raise BrokerError("the embedded broker needs amqtt: pip install amqtt (make setup does)")
    if kind not in KINDS:
        raise BrokerError(f"unknown broker kind {kind!r}: use one of embedded, mosquitto, auto")
    return kind


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn (Linux): the child gets SIGTERM when its parent dies, so no broker outlives
    it. Resolved in the parent: after fork the child may only call it, not import anything."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Broker:
    """An MQTT broker child process on ``host:port`` (port 0: a free one, kept across restarts)."""

    def __init__(
        self,
        kind: Kind = "auto",
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        users: dict[str, str] | None = None,
        workdir: str | Path | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.kind = _resolve(kind)
        self.host = host
        self.port = port
        self.users = dict(users or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"cyphy-broker-{self.kind}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- public --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Broker:
        """Start the broker and return once it answers an MQTT CONNECT."""
        if self.running:
            return self
        if self.port != 0:
            if _port_in_use(self.host, self.port):
                raise BrokerError(
                    f"port {self.port} on {self.host} is already in use: stop what listens there,"
                    " or use port=0 for a free port")
            return self._start()
        tries = 3  # a free port can be taken by another process before the broker binds it
        while True:
            self.port = free_port(self.host)
            try:
                return self._start()
            except _ExitedOnStart:
                tries -= 1
                if not tries:
                    raise

    def _start(self) -> Broker:
        cmd = self._mosquitto_cmd() if self.kind == "mosquitto" else self._embedded_cmd()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=self._env(),
                preexec_fn=_parent_death_signal())
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, SIGKILL after stop_timeout). Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the broker (fault tests: no clean shutdown). Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self, *, hard: bool = False) -> Broker:
        """Stop (kill if hard) and start again on the same port. Nothing persists across it."""
        self.kill() if hard else self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the working directory if this Broker made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<Broker {self.kind} {self.url} {state}>"

    # -- child process ---------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])  # so `-m cyphy.broker` imports
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _embedded_cmd(self) -> list[str]:
        cmd = [sys.executable, "-m", "cyphy.broker", "--host", self.host, "--port", str(self.port)]
        if self.users:
            pw = self.workdir / "passwd.amqtt"
            _write_private(pw, [amqtt_password_line(u, p) for u, p in self.users.items()])
            cmd += ["--password-file", str(pw)]
        return cmd

    def _mosquitto_cmd(self) -> list[str]:
        binary = mosquitto_path()
        if binary is None:
            raise BrokerError(f"Mosquitto is not installed: {MOSQUITTO_HINT}")
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%d %H:%M:%S",
            "connection_messages true",
            # as root Mosquitto would switch to the 'mosquitto' user and lose this directory
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.users:
            pw = self.workdir / "passwd.mosquitto"
            _write_private(pw, [mosquitto_password_line(u, p) for u, p in self.users.items()])
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [binary, "-c", str(conf)]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        user, password = next(iter(self.users.items()), (None, None))
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise _ExitedOnStart(
                    f"{self.kind} broker exited with code {self.proc.returncode} on start:"
                    f" {self._log_tail()} (log: {self.log_path})")
            if mqtt_connects(self.host, self.port, user, password, timeout=1.0):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"{self.kind} broker on {self.host}:{self.port} did not accept an MQTT connect"
                    f" within {self.start_timeout:g} s: see {self.log_path}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1].strip() if lines else "empty log"


def _write_private(path: Path, lines: list[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def mqtt_connects(host: str, port: int, username: str | None = None,
                  password: str | None = None, timeout: float = 2.0) -> bool:
    """True when an MQTT CONNECT to host:port gets a CONNACK accepting it (paho, no threads)."""
    import paho.mqtt.client as mqtt

    result: list[int] = []
    client = mqtt.Client(client_id=f"cyphy-probe-{os.getpid()}-{time.monotonic_ns()}")
    client.on_connect = lambda _c, _u, _f, rc: result.append(rc)
    if username is not None:
        client.username_pw_set(username, password)
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + timeout
        while not result and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                return False
        return result == [0]
    finally:
        client.disconnect()


# -- python -m cyphy.broker: the embedded broker ----------------------------------------------

def _amqtt_config(host: str, port: int, password_file: str | None) -> dict:
    auth = ({"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": password_file}}
            if password_file else
            {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}})
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.logging_amqtt.EventLoggerPlugin": {}, **auth},
    }


async def _serve(host: str, port: int, password_file: str | None) -> None:
    from amqtt.broker import Broker as AmqttBroker

    broker = AmqttBroker(_amqtt_config(host, port, password_file))
    await broker.start()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    auth = f"users from {password_file}" if password_file else "anonymous"
    print(f"cyphy.broker: embedded (amqtt) on mqtt://{host}:{port}, {auth}", flush=True)
    await done.wait()
    await broker.shutdown()
    print("cyphy.broker: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cyphy.broker",
        description="The embedded MQTT broker (amqtt) for tests and demos; not for production.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=1883, help="TCP port (default 1883)")
    p.add_argument("--password-file", help="amqtt password file (user:argon2-hash lines);"
                                           " without it anonymous clients are accepted")
    p.add_argument("--verbose", "-v", action="store_true", help="log amqtt's debug messages")
    args = p.parse_args(argv)
    if not embedded_available():
        print("cyphy.broker: amqtt is not installed: pip install amqtt", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machines: noise
    if _port_in_use(args.host, args.port):
        print(f"cyphy.broker: port {args.port} on {args.host} is already in use:"
              " choose another --port", file=sys.stderr)
        return 1
    try:
        asyncio.run(_serve(args.host, args.port, args.password_file))
    except KeyboardInterrupt:
        pass
    except Exception as e:  # amqtt's BrokerError, a bad password file, ...
        print(f"cyphy.broker: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
