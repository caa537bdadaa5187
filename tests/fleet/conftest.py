"""Fleet test fixtures: real MQTT brokers (cyphy.broker) and paho-mqtt clients.

Every test that uses `broker` or `broker_factory` runs once per broker kind: the
embedded amqtt broker always, Mosquitto where it is installed (else that run is
skipped, the only skip here). Brokers and clients are stopped after each test,
also when it fails; broker logs stay in the test's tmp_path.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from cyphy.broker import Broker, mosquitto_path

WAIT = 5.0  # s, the longest any single broker event may take here
MOSQUITTO_SKIP = "Mosquitto not installed (tools/install-debian-packages)"
BROKER_KINDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("mosquitto", id="mosquitto",
                 marks=pytest.mark.skipif(mosquitto_path() is None, reason=MOSQUITTO_SKIP)),
]

BrokerFactory = Callable[..., Broker]


@pytest.fixture(params=BROKER_KINDS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def broker_factory(broker_kind: str, tmp_path: Path) -> Iterator[BrokerFactory]:
    """broker_factory(kind=None, port=0, **kw) starts a broker (default: this run's kind)."""
    started: list[Broker] = []
    count = itertools.count()

    def start(kind: str | None = None, port: int = 0, **kw) -> Broker:
        b = Broker(kind or broker_kind, port=port,  # type: ignore[arg-type]
                   workdir=tmp_path / f"broker-{next(count)}", **kw)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        b.close()


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> Broker:
    """One running broker on 127.0.0.1 and a free port; each kind in turn."""
    return broker_factory()


class Client:
    """A paho-mqtt 1.6 client on its network thread; every wait is on an event, with a timeout."""

    _ids = itertools.count()

    def __init__(self, broker: Broker, client_id: str | None = None, *,
                 clean_session: bool = True, keepalive: int = 10,
                 username: str | None = None, password: str | None = None) -> None:
        self.broker = broker
        self.client_id = client_id or f"cyphy-test-{next(self._ids)}"
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connects = 0
        self.subscriptions: list[tuple[str, int]] = []  # renewed on every (re)connect
        self._keepalive = keepalive
        self._cond = threading.Condition()
        self._suback: dict[int, tuple[int, ...]] = {}
        self._connected = False
        self.c = mqtt.Client(client_id=self.client_id, clean_session=clean_session)
        self.c.reconnect_delay_set(min_delay=0.2, max_delay=0.5)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda _c, _u, msg: self.messages.put(msg)

    # callbacks (paho's thread)
    def _on_connect(self, c: mqtt.Client, _u: object, _flags: dict, rc: int) -> None:
        if rc == 0:
            for topic, qos in self.subscriptions:
                c.subscribe(topic, qos)
        with self._cond:
            self.connects += rc == 0
            self._connected = rc == 0
            self._cond.notify_all()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _rc: int) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, granted: tuple[int, ...]) -> None:
        with self._cond:
            self._suback[mid] = granted
            self._cond.notify_all()

    # test side
    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(ready, timeout):
                raise AssertionError(f"{self.client_id}: {what} not within {timeout:g} s"
                                     f" ({self.broker!r}, log {self.broker.log_path})")

    def connect(self, timeout: float = WAIT) -> Client:
        self.c.connect(self.broker.host, self.broker.port, keepalive=self._keepalive)
        self.c.loop_start()
        self.wait_connected(1, timeout)
        return self

    def wait_connected(self, connects: int, timeout: float = WAIT) -> None:
        """Until the client is connected for the `connects`-th time (1: first connect)."""
        self._wait(f"connect #{connects}",
                   lambda: self._connected and self.connects >= connects, timeout)

    def wait_disconnected(self, timeout: float = WAIT) -> None:
        self._wait("disconnect", lambda: not self._connected, timeout)

    def wait_subacks(self, count: int, timeout: float = WAIT) -> None:
        """Until `count` SUBACKs have arrived in all (renewed subscriptions count too)."""
        self._wait(f"{count} SUBACKs", lambda: len(self._suback) >= count, timeout)

    def subscribe(self, topic: str, qos: int = 1, timeout: float = WAIT) -> int:
        """Subscribe and wait for the SUBACK; returns the granted QoS."""
        self.subscriptions.append((topic, qos))
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(rc)
        self._wait(f"SUBACK for {topic}", lambda: mid in self._suback, timeout)
        return self._suback[mid][0]

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                retain: bool = False, timeout: float = WAIT) -> None:
        """Publish; with QoS 1 wait until the broker acknowledged it (PUBACK)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        if qos:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"{self.client_id}: no PUBACK for {topic} in {timeout:g} s"

    def get(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout:g} s"
                                 f" ({self.broker!r}, log {self.broker.log_path})") from None

    def until(self, topic: str, timeout: float = WAIT) -> list[mqtt.MQTTMessage]:
        """The messages received up to and including the first one on `topic`."""
        got = [self.get(timeout)]
        while got[-1].topic != topic:
            got.append(self.get(timeout))
        return got

    def close(self) -> None:
        """DISCONNECT (no will), wait until it is sent, stop the network thread."""
        was_connected = self._connected
        self.c.disconnect()  # also ends reconnect attempts
        if was_connected:
            with self._cond:
                self._cond.wait_for(lambda: not self._connected, 2.0)
        self.c.loop_stop()


@pytest.fixture
def mqtt_client() -> Iterator[Callable[..., Client]]:
    """mqtt_client(broker, client_id=None, connect=True, **kw) -> Client; all closed after the test."""
    clients: list[Client] = []

    def make(broker: Broker, client_id: str | None = None, connect: bool = True, **kw) -> Client:
        c = Client(broker, client_id, **kw)
        clients.append(c)
        return c.connect() if connect else c

    yield make
    for c in clients:
        c.close()
