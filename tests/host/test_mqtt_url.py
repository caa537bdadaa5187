"""Broker and node URLs, credentials and TLS settings (cyphy.mqtt), and the mqtt/mqtts
entries of the link registry (cyphy.links): no broker needed. Every refusal is one line
that says what to give instead, and never shows a password."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from cyphy import mqtt
from cyphy.links import LinkError, check_link_url, node_opener, open_link
from cyphy.mqtt import BrokerUrl, MqttError, parse_broker_url, parse_node_url

SECRET = "pa55-never-shown"
CYPHY = str(Path(sys.executable).parent / "cyphy")


@pytest.mark.parametrize("url, want", [
    ("mqtt://127.0.0.1", BrokerUrl("mqtt", "127.0.0.1", 1883)),
    ("mqtt://127.0.0.1:1884/", BrokerUrl("mqtt", "127.0.0.1", 1884)),
    ("mqtts://broker.plant", BrokerUrl("mqtts", "broker.plant", 8883)),
    ("mqtts://gw%40plant@broker.plant:9883", BrokerUrl("mqtts", "broker.plant", 9883, "gw@plant")),
    ("mqtt://[::1]:1883", BrokerUrl("mqtt", "::1", 1883)),
])
def test_broker_urls(url: str, want: BrokerUrl) -> None:
    b = parse_broker_url(url)
    assert b == want
    assert parse_broker_url(str(b)) == b        # str() is a URL that parses back
    assert b.tls == (b.scheme == "mqtts")


def test_broker_url_text_leaves_the_default_port_out() -> None:
    assert str(parse_broker_url("mqtt://h:1883")) == "mqtt://h"
    assert str(parse_broker_url("mqtts://u@h:8883")) == "mqtts://u@h"
    assert str(parse_broker_url("mqtts://h:1883")) == "mqtts://h:1883"
    assert str(parse_broker_url("mqtt://[::1]:1884")) == "mqtt://[::1]:1884"


@pytest.mark.parametrize("url, words", [
    # the gateway's --broker messages, kept (cyphy.gateway.parse_broker_url)
    ("ftp://x", ["--broker ftp://x: not an mqtt:// or mqtts:// URL", "mqtt://HOST[:PORT]"]),
    ("mqtt://127.0.0.1:99999", ["--broker mqtt://127.0.0.1:99999: the port must be a number "
                                "from 1 to 65535", "1883"]),
    ("mqtt://h:0", ["the port must be a number"]),
    ("mqtt://h:abc", ["the port must be a number"]),
    ("mqtt://h:", ["the port must be a number"]),
    ("mqtt://", ["give a host"]),
    ("mqtt://h/plant", ["only mqtt[s]://[USER@]HOST[:PORT]", "no path"]),
    ("mqtt://h?tls=1", ["no ?options", "environment"]),
    ("mqtt://h#x", ["no ?options"]),
    ("mqtt://@h", ["an empty user name"]),
    ("127.0.0.1:1883", ["not an mqtt:// or mqtts:// URL"]),
])
def test_bad_broker_urls_are_one_line(url: str, words: list[str]) -> None:
    with pytest.raises(MqttError) as e:
        parse_broker_url(url)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"--broker {url}:"), text
    for w in words:
        assert w in text, (w, text)


def test_node_urls() -> None:
    n = parse_node_url("mqtts://tool@broker:9000/plant/gw%201/oven-1")
    assert (n.broker, n.group, n.edge, n.device) == (
        BrokerUrl("mqtts", "broker", 9000, "tool"), "plant", "gw 1", "oven-1")
    assert str(n) == "mqtts://tool@broker:9000/plant/gw%201/oven-1"
    assert parse_node_url(str(n)) == n
    assert parse_node_url("mqtt://h/g/e/d/") == parse_node_url("mqtt://h:1883/g/e/d")


@pytest.mark.parametrize("url, words", [
    ("mqtt://h", ["no path", "mqtt://HOST[:PORT]/GROUP/EDGE/DEVICE", "cyphy discover --broker mqtt://h"]),
    ("mqtt://h/plant/gw1", ["2 path part(s)", "e.g. mqtt://h/plant/gw1/oven-1"]),
    ("mqtt://h/a/b/c/d", ["4 path part(s)"]),
    ("mqtt://h/a//c", ["EDGE", "empty"]),
    ("mqtt://h/a/b/c%2Bd", ["DEVICE", "'+'"]),
    ("mqtt://h/a/b%23/c", ["EDGE", "'#'"]),
    ("mqtt://h:70000/a/b/c", ["the port must be"]),
    ("mqtt://h/a/b/c?x=1", ["no ?options"]),
    ("udp://h/a/b/c", ["not an mqtt:// or mqtts:// URL", "e.g. mqtt://127.0.0.1:1883/plant/gw1/oven-1"]),
])
def test_bad_node_urls_are_one_line(url: str, words: list[str]) -> None:
    with pytest.raises(MqttError) as e:
        parse_node_url(url)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{url}:"), text
    for w in words:
        assert w in text, (w, text)


@pytest.mark.parametrize("url", [
    f"mqtt://user:{SECRET}@h", f"mqtts://user:{SECRET}@h:8883/g/e/d", f"mqtt://:{SECRET}@h",
    f"mqtt://user:{SECRET}@h:99999", f"mqtt://u:{SECRET}/x@h/g/e/d",
])
def test_a_password_in_a_url_is_refused_and_never_shown(url: str) -> None:
    for parse in (parse_broker_url, parse_node_url, check_link_url):
        with pytest.raises(LinkError) as e:
            parse(url)
        assert SECRET not in str(e.value) and "***" in str(e.value), str(e.value)
    assert SECRET not in mqtt.redact(url)


def test_credentials_from_the_environment(tmp_path: Path) -> None:
    b, bu = parse_broker_url("mqtt://h"), parse_broker_url("mqtt://url-user@h")
    assert mqtt.credentials(b, {}) == (None, None)
    assert mqtt.credentials(bu, {}) == ("url-user", None)
    env = {"CYPHY_MQTT_USERNAME": "env-user", "CYPHY_MQTT_PASSWORD": SECRET}
    assert mqtt.credentials(b, env) == ("env-user", SECRET)
    assert mqtt.credentials(bu, env) == ("url-user", SECRET)      # the URL's user wins
    pw = tmp_path / "pw"
    pw.write_text(f"{SECRET}\nignored\n")
    assert mqtt.credentials(bu, {"CYPHY_MQTT_PASSWORD_FILE": str(pw)}) == ("url-user", SECRET)
    bad = [
        ({"CYPHY_MQTT_PASSWORD": SECRET}, "no user name"),
        ({"CYPHY_MQTT_PASSWORD": SECRET, "CYPHY_MQTT_PASSWORD_FILE": str(pw)}, "keep one"),
        ({"CYPHY_MQTT_PASSWORD_FILE": str(tmp_path / "none")}, "No such file"),
        ({"CYPHY_MQTT_PASSWORD_FILE": str(tmp_path)}, "CYPHY_MQTT_PASSWORD_FILE="),
    ]
    empty = tmp_path / "empty"
    empty.write_text("\n")
    bad.append(({"CYPHY_MQTT_PASSWORD_FILE": str(empty)}, "first line is empty"))
    for env, word in bad:
        with pytest.raises(MqttError) as e:
            mqtt.credentials(b if "CYPHY_MQTT_PASSWORD" in env else bu, env)
        assert word in str(e.value) and SECRET not in str(e.value), str(e.value)


def _pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_tls_settings_from_the_environment(tmp_path: Path) -> None:
    ctx = mqtt.tls_context({})
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname   # system CAs, verified
    ca, _ = _pem_pair(tmp_path, "ca")
    cert, key = _pem_pair(tmp_path, "client")
    ctx = mqtt.tls_context({"CYPHY_MQTT_CA": str(ca), "CYPHY_MQTT_CERT": str(cert),
                            "CYPHY_MQTT_KEY": str(key)})
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "ca"),),)]
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for env, words in [
        ({"CYPHY_MQTT_CA": str(tmp_path / "none.pem")}, ["CYPHY_MQTT_CA=", "no such file"]),
        ({"CYPHY_MQTT_CA": str(tmp_path)}, ["not a file"]),
        ({"CYPHY_MQTT_CA": str(junk)}, ["not a PEM file of CA certificates"]),
        ({"CYPHY_MQTT_KEY": str(key)}, ["CYPHY_MQTT_CERT is not"]),
        ({"CYPHY_MQTT_CERT": str(cert)}, ["not a PEM certificate and its private key"]),
        ({"CYPHY_MQTT_CERT": str(cert), "CYPHY_MQTT_KEY": str(ca)}, ["CYPHY_MQTT_KEY="]),
    ]:
        with pytest.raises(MqttError) as e:
            mqtt.tls_context(env)
        for w in words:
            assert w in str(e.value), (w, str(e.value))
    # the factory: TLS for mqtts:// only, credentials set
    env = {"CYPHY_MQTT_CA": str(ca), "CYPHY_MQTT_USERNAME": "u", "CYPHY_MQTT_PASSWORD": SECRET}
    c = mqtt.make_client(parse_broker_url("mqtts://h"), "t1", env=env)
    assert c._ssl and c._username == b"u"
    c = mqtt.make_client(parse_broker_url("mqtt://h"), "t2", env=env)
    assert not c._ssl


def test_the_registry_knows_mqtt_urls_without_a_frame_link() -> None:
    check_link_url("mqtt://127.0.0.1:1883/plant/gw1/oven-1")
    check_link_url("mqtts://u@broker/plant/gw1/oven-1")
    with pytest.raises(LinkError, match="2 path part"):
        check_link_url("mqtt://127.0.0.1/plant/gw1")
    with pytest.raises(LinkError, match="not a frame link") as e:
        open_link("mqtt://127.0.0.1:1/plant/gw1/oven-1")   # says so, connects to nothing
    assert "cyphy.connect" in str(e.value)
    from cyphy.fleet import MqttNode

    assert node_opener("mqtts://h/g/e/d") is MqttNode
    assert node_opener("udp://127.0.0.1") is None
    with pytest.raises(LinkError) as e:
        check_link_url("ftp://x")
    assert "mqtt://HOST[:PORT]/GROUP/EDGE/DEVICE" in str(e.value)


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CYPHY, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=env)


@pytest.mark.parametrize("args, code, word", [
    (["get", "mqtt://127.0.0.1/plant/gw1", "oven"], 1, "2 path part(s)"),
    (["set", "mqtt://h:99999/g/e/d", "oven.setpoint=1"], 1, "99999"),
    (["monitor", f"mqtt://u:{SECRET}@h/g/e/d", "--seconds", "1"], 1, "a password in the URL"),
    (["get", "mqtts://127.0.0.1/g/e/d", "oven"], 1, "CYPHY_MQTT_CA="),
    (["discover", "--broker", "mqtt://h/plant"], 2, "no path"),
    (["discover", "--broker", "udp://h"], 2, "not an mqtt://"),
    (["discover", "--broker", "mqtt://127.0.0.1:1", "--group", "a/b"], 2, "--group"),
    (["discover", "--group", "plant"], 2, "--group needs --broker"),
])
def test_cli_refusals_are_one_line(args: list[str], code: int, word: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYPHY_MQTT", "CYPHY_DEBUG"))}
    env.update(CYPHY_HOME=str(tmp_path), CYPHY_MQTT_CA=str(tmp_path / "missing.pem"))
    p = run(*args, env=env)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == code, (p.returncode, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in p.stderr, p.stderr
    assert word in lines[0] and SECRET not in p.stderr + p.stdout, lines[0]
