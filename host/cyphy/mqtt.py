"""Broker URLs and MQTT client setup: the one place for both (the gateway and the host tools).

    mqtt://[USER@]HOST[:PORT]                 plain MQTT, port 1883 if not given
    mqtts://[USER@]HOST[:PORT]                MQTT over TLS, port 8883 if not given
    mqtt[s]://[USER@]HOST[:PORT]/GROUP/EDGE/DEVICE   a node behind a gateway (cyphy.fleet)

Secrets never go in a URL (it shows in process lists, shell history and logs): the
password comes from the environment, and nothing here puts it in a message.

    CYPHY_MQTT_USERNAME       the user name, when the URL has no USER@
    CYPHY_MQTT_PASSWORD       the password (or:)
    CYPHY_MQTT_PASSWORD_FILE  a file whose first line is the password (systemd credentials,
                              Docker secrets)
    CYPHY_MQTT_CA             mqtts:// only: a PEM file of the CA certificate(s) to trust
                              instead of the system's
    CYPHY_MQTT_CERT           mqtts:// only: a client certificate (PEM), for brokers that
    CYPHY_MQTT_KEY            require one, and its private key (if not in the CERT file)

TLS always verifies the broker's certificate and host name; there is no option to turn
that off (give the CA of a self-signed broker in CYPHY_MQTT_CA instead).

    b = parse_broker_url("mqtts://gw@broker.plant:8883")
    client = make_client(b, "cyphy-get-1234")
    connect(client, b, timeout=5.0)      # MqttError with one line if it cannot
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import ParseResult, quote, unquote, urlparse

import paho.mqtt.client as mqtt

from . import sparkplug as sp
from .links import LinkError, host_and_port

__all__ = ["MqttError", "BrokerUrl", "NodeUrl", "parse_broker_url", "parse_node_url",
           "check_node_url", "redact", "credentials", "tls_context", "make_client", "connect",
           "stop",
           "MQTT_PORT", "MQTTS_PORT", "SCHEMES"]

MQTT_PORT = 1883
MQTTS_PORT = 8883
SCHEMES = {"mqtt": MQTT_PORT, "mqtts": MQTTS_PORT}

ENV_USERNAME = "CYPHY_MQTT_USERNAME"
ENV_PASSWORD = "CYPHY_MQTT_PASSWORD"
ENV_PASSWORD_FILE = "CYPHY_MQTT_PASSWORD_FILE"
ENV_CA = "CYPHY_MQTT_CA"
ENV_CERT = "CYPHY_MQTT_CERT"
ENV_KEY = "CYPHY_MQTT_KEY"

NODE_FORM = "mqtt://HOST[:PORT]/GROUP/EDGE/DEVICE"


class MqttError(LinkError):
    """A broker URL, credential, TLS setting or connection that cannot work: one line
    saying what and what to do, never a secret."""


@dataclass(frozen=True)
class BrokerUrl:
    """A broker: scheme (mqtt or mqtts), host, port, user name (from the URL) if any."""

    scheme: str
    host: str
    port: int
    username: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        """The URL, without a default port; never a password (there is none in it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        port = "" if self.port == SCHEMES[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{user}{host}{port}"

    def node_url(self, group: str, edge: str, device: str) -> str:
        """The URL of a device behind the edge node group/edge on this broker."""
        return f"{self}/" + "/".join(quote(x, safe="-._~!$&'()*,;=:@") for x in (group, edge, device))


@dataclass(frozen=True)
class NodeUrl:
    """mqtt[s]://[USER@]HOST[:PORT]/GROUP/EDGE/DEVICE."""

    broker: BrokerUrl
    group: str
    edge: str
    device: str

    def __str__(self) -> str:
        return self.broker.node_url(self.group, self.edge, self.device)


def redact(url: str) -> str:
    """url with any password in it replaced by ***: what error messages show."""
    try:
        u = urlparse(url)
        has_password = u.password is not None
    except ValueError:
        has_password = False
        u = None
    if not has_password or u is None:
        if "@" in url and ":" in url.split("://", 1)[-1].split("@", 1)[0]:
            # not parseable, but looks like user:secret@...: hide it all up to @
            scheme, _, rest = url.rpartition("://")
            return f"{scheme}://***@{rest.split('@', 1)[1]}" if scheme else "***@" + rest.split("@", 1)[1]
        return url
    user = u.username or ""
    host = u.netloc.rsplit("@", 1)[1]
    return u._replace(netloc=f"{user}:***@{host}").geturl()


def _parse(url: str, what: str, form: str) -> tuple[ParseResult, BrokerUrl, str]:
    """(parsed, broker, the safe text of url for messages)."""
    safe = redact(url)
    pre = f"{what} " if what else ""
    try:
        u = urlparse(url)
    except ValueError as e:
        raise MqttError(f"{pre}{safe}: not a URL ({e}); give {form}") from None
    if u.scheme not in SCHEMES:
        example = "mqtt://127.0.0.1:1883" + ("/plant/gw1/oven-1" if form == NODE_FORM else "")
        raise MqttError(f"{pre}{safe}: not an mqtt:// or mqtts:// URL; give {form}, e.g. "
                        f"{example}")
    try:
        password = u.password
    except ValueError:
        password = None
    if password is not None:
        raise MqttError(f"{pre}{safe}: a password in the URL is refused (process lists and "
                        f"logs would show it): give mqtt://USER@HOST and the password in "
                        f"${ENV_PASSWORD} or ${ENV_PASSWORD_FILE}")
    if u.query or u.fragment:
        raise MqttError(f"{pre}{safe}: no ?options or #fragment here; give {form} (TLS and "
                        f"credentials come from the environment: docs/cli.md)")
    try:
        host, port = host_and_port(safe, u, SCHEMES[u.scheme], f"127.0.0.1:{SCHEMES[u.scheme]}")
    except LinkError as e:
        raise MqttError(f"{pre}{e}") from None
    user = unquote(u.username) if u.username else None
    if u.username is not None and not user:
        raise MqttError(f"{pre}{safe}: an empty user name before '@': give mqtt://USER@HOST "
                        f"or leave USER@ out")
    return u, BrokerUrl(u.scheme, host, port, user), safe


def parse_broker_url(url: str, what: str = "--broker") -> BrokerUrl:
    """The broker of mqtt[s]://[USER@]HOST[:PORT] (no path), or MqttError; `what` starts
    every message (the option the URL came from)."""
    u, b, safe = _parse(url, what, "mqtt://HOST[:PORT]")
    if u.path not in ("", "/"):
        pre = f"{what} " if what else ""
        raise MqttError(f"{pre}{safe}: only mqtt[s]://[USER@]HOST[:PORT] is understood here "
                        f"(no path: the broker, not a node)")
    return b


def parse_node_url(url: str) -> NodeUrl:
    """A node behind a gateway, mqtt[s]://[USER@]HOST[:PORT]/GROUP/EDGE/DEVICE, or
    MqttError saying what is missing or wrong. Ids may be %-encoded."""
    u, b, safe = _parse(url, "", NODE_FORM)
    parts = u.path.split("/")[1:] if u.path else []
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if len(parts) != 3:
        have = "no path" if not parts else f"{len(parts)} path part(s)"
        raise MqttError(f"{safe}: {have}: give the device as {NODE_FORM}, e.g. "
                        f"{b}/plant/gw1/oven-1 (cyphy discover --broker {b} lists them)")
    ids = []
    for what, raw in zip(("GROUP", "EDGE", "DEVICE"), parts):
        v = unquote(raw)
        try:
            sp.validate_id(v, what)
        except sp.SparkplugError as e:
            raise MqttError(f"{safe}: {e} (Sparkplug ids are non-empty, without + / #)") from None
        ids.append(v)
    return NodeUrl(b, *ids)


def check_node_url(url: str, _parsed: ParseResult | None = None) -> None:
    """cyphy.links' check for the mqtt and mqtts schemes: MqttError (a LinkError) if url
    cannot be a node URL; connects to nothing."""
    parse_node_url(url)


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def credentials(broker: BrokerUrl, env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(user name, password) for broker: the URL's USER@ or $CYPHY_MQTT_USERNAME, and
    $CYPHY_MQTT_PASSWORD or the first line of $CYPHY_MQTT_PASSWORD_FILE. A password
    without a user name is an error (MQTT 3.1.1 sends none without one)."""
    e = _env(env)
    user = broker.username or e.get(ENV_USERNAME) or None
    password = e.get(ENV_PASSWORD) or None
    pw_file = e.get(ENV_PASSWORD_FILE) or None
    if password is not None and pw_file is not None:
        raise MqttError(f"both ${ENV_PASSWORD} and ${ENV_PASSWORD_FILE} are set: keep one")
    if pw_file is not None:
        try:
            text = Path(pw_file).read_text(encoding="utf-8")
        except OSError as err:
            raise MqttError(f"${ENV_PASSWORD_FILE}={pw_file}: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise MqttError(f"${ENV_PASSWORD_FILE}={pw_file}: not a UTF-8 text file") from None
        lines = text.splitlines()
        password = lines[0] if lines else ""
        if not password:
            raise MqttError(f"${ENV_PASSWORD_FILE}={pw_file}: the file's first line is empty")
    if password is not None and user is None:
        src = ENV_PASSWORD_FILE if pw_file is not None else ENV_PASSWORD
        raise MqttError(f"${src} is set but no user name: give mqtt://USER@HOST or set "
                        f"${ENV_USERNAME}")
    return user, password


def tls_context(env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The TLS settings for mqtts://: the system's CAs, or $CYPHY_MQTT_CA's; a client
    certificate from $CYPHY_MQTT_CERT (and $CYPHY_MQTT_KEY) if set. The broker's
    certificate and host name are always verified."""
    e = _env(env)
    ca, cert, key = (e.get(n) or None for n in (ENV_CA, ENV_CERT, ENV_KEY))
    if key is not None and cert is None:
        raise MqttError(f"${ENV_KEY} is set but ${ENV_CERT} is not: give the client "
                        f"certificate too (or unset ${ENV_KEY})")
    for name, path in ((ENV_CA, ca), (ENV_CERT, cert), (ENV_KEY, key)):
        if path is not None and not Path(path).is_file():
            why = "no such file" if not Path(path).exists() else "not a file"
            raise MqttError(f"${name}={path}: {why} (give a PEM file)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (ssl.SSLError, OSError) as err:
        raise MqttError(f"${ENV_CA}={ca}: not a PEM file of CA certificates "
                        f"({_ssl_reason(err)})") from None
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as err:
            what = f"${ENV_CERT}={cert}" + (f" with ${ENV_KEY}={key}" if key else "")
            raise MqttError(f"{what}: not a PEM certificate and its private key "
                            f"({_ssl_reason(err)})") from None
    return ctx


def _ssl_reason(err: BaseException) -> str:
    return getattr(err, "reason", None) or getattr(err, "strerror", None) or type(err).__name__


def make_client(broker: BrokerUrl, client_id: str, *, clean_session: bool = True,
                env: Mapping[str, str] | None = None) -> mqtt.Client:
    """A paho-mqtt 1.6 client for broker, not yet connected: credentials and TLS set from
    the environment (see the module doc). The caller sets callbacks, will, and connects
    (connect() below, or connect_async)."""
    user, password = credentials(broker, env)
    ctx = tls_context(env) if broker.tls else None
    c = mqtt.Client(client_id=client_id, clean_session=clean_session)
    if user is not None:
        c.username_pw_set(user, password)
    if ctx is not None:
        c.tls_set_context(ctx)
    return c


# CONNACK return codes (MQTT 3.1.1, 3.2.2.3) and what to do about them
_REFUSED = {
    1: "it does not speak MQTT 3.1.1",
    2: "it refused the client id",
    3: "the broker is unavailable",
    4: f"bad user name or password (check ${ENV_USERNAME}/USER@ and ${ENV_PASSWORD})",
    5: f"not authorised (give credentials: mqtt://USER@HOST and ${ENV_PASSWORD}, or check "
       f"the broker's ACL)",
}


def refused_text(broker: BrokerUrl, rc: int) -> str:
    """One line for a CONNACK refusal."""
    return f"broker {broker}: refused the connection: {_REFUSED.get(rc, mqtt.connack_string(rc))}"


def connect(client: mqtt.Client, broker: BrokerUrl, timeout: float = 5.0,
            keepalive: int = 10) -> None:
    """Connect client to broker and start its network thread (which reconnects by itself
    later); returns once the broker accepted (CONNACK 0), else MqttError with one line
    (unreachable, TLS, refused) and the client stopped. Set the client's on_connect before
    calling this: it is still called, on every connect. (paho 1.6 waits up to timeout for
    the TCP connection, and up to keepalive for the TLS handshake.)"""
    done = threading.Event()
    result: list[int] = []
    theirs = client.on_connect

    def on_connect(c: mqtt.Client, userdata: object, flags: dict, rc: int) -> None:
        if not done.is_set():
            result.append(rc)
            done.set()
        if theirs is not None:
            theirs(c, userdata, flags, rc)

    client.on_connect = on_connect
    client._connect_timeout = timeout  # paho 1.6 has no setter (2.x: connect_timeout)
    try:
        client.connect(broker.host, broker.port, keepalive=keepalive)
    except ssl.SSLCertVerificationError as e:
        raise MqttError(f"broker {broker}: TLS: the broker's certificate is not trusted "
                        f"({e.verify_message}): give its CA in ${ENV_CA}") from None
    except ssl.SSLError as e:
        raise MqttError(f"broker {broker}: TLS failed ({_ssl_reason(e)}): is it a TLS "
                        f"listener (mqtts:// is usually port {MQTTS_PORT})?") from None
    except (ConnectionResetError, BrokenPipeError) as e:
        if broker.tls:
            raise MqttError(f"broker {broker}: it closed the connection in the TLS handshake: "
                            f"is it a TLS listener (mqtts:// is usually port {MQTTS_PORT})?") from None
        raise MqttError(f"broker {broker}: it closed the connection ({e.strerror or e})") from None
    except ConnectionRefusedError:
        raise MqttError(f"broker {broker}: connection refused: is the broker running, on "
                        f"port {broker.port}?") from None
    except socket.gaierror as e:
        raise MqttError(f"broker {broker}: cannot find the host {broker.host!r} "
                        f"({e.strerror or e}); check the name or give its IP address") from None
    except (TimeoutError, socket.timeout):
        if broker.tls:   # paho 1.6 gives the TLS handshake keepalive seconds
            raise MqttError(f"broker {broker}: no TLS handshake within {max(timeout, keepalive):g} "
                            f"s: is it a TLS listener (mqtts:// is usually port {MQTTS_PORT}), "
                            f"and is the host reachable?") from None
        raise MqttError(f"broker {broker}: no answer within {timeout:g} s: check the host "
                        f"and port, and the network") from None
    except OSError as e:
        raise MqttError(f"broker {broker}: cannot connect ({e.strerror or e or type(e).__name__})") from None
    client.loop_start()
    if not done.wait(timeout):
        stop(client)
        raise MqttError(f"broker {broker}: no CONNACK within {timeout:g} s: is it an MQTT "
                        f"broker" + ("" if broker.tls else " (a TLS port? use mqtts://)") + "?")
    if result[0] != 0:
        stop(client)
        raise MqttError(refused_text(broker, result[0]))


def stop(client: mqtt.Client) -> None:
    """DISCONNECT (the will is not sent) and stop the network thread; never raises."""
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001 - closing must not fail
        pass
    try:
        client.loop_stop()
    except Exception:  # noqa: BLE001
        pass
