"""The sim board's test equipment: the plant seen and disturbed from the host (SimBench),
faults on the serial line (SerialLinkFaults) and on UDP (UdpFaultProxy)."""

from __future__ import annotations

import json
import math
import socket
import statistics
import threading
import time

import pytest

from benches import THERMAL
from cyphy.sim.bench_control import BenchControlError, SerialLinkFaults, SimBench
from cyphy.sim.equipment import socket_path
from cyphy.sim.udp_proxy import UdpFaultProxy
from serial_console import Console

TO_DEGC = 150 / 2_450_000  # THERMAL's adc pin: 0..150 degC on 0..2.45 V
SETUP = ("import machine, time\n"
         "adc = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)\n"
         "pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=32768)\n")


@pytest.fixture
def oven(sim_nodes):
    """A thermal bench node on virtual time, its console in the raw REPL, and its SimBench."""
    node = sim_nodes("oven", virtual_time=True, bench=THERMAL)
    with Console(node.port) as con, SimBench.connect("oven", node.home) as bench:
        con.raw()
        yield con, bench


def degc(con: Console) -> float:
    return int(con.run("print(adc.read_uv())")) * TO_DEGC


# ---------------------------------------------------------------- plant
def test_state_is_the_true_plant_and_matches_the_adc(oven, cyphy_home):
    con, bench = oven
    st = bench.state()
    assert (st["type"], st["virtual_time"], st["time_s"], st["plant_time_s"]) == ("fotd", True, 0.0, 0.0)
    assert st["signals"] == {"temperature": 20.0, "heater": 0.0, "ambient": 20.0}
    mode = socket_path(cyphy_home / "sim" / "oven").stat().st_mode & 0o777
    assert mode == 0o600

    con.run(SETUP + "time.sleep(300)\n")
    st = bench.state()
    heater = 100 * 32768 / 65535
    expected = 20 + 0.9 * heater * (1 - math.exp(-(300 - 12) / 160))
    assert st["time_s"] == st["plant_time_s"] == 300.0
    assert st["signals"]["heater"] == pytest.approx(heater, abs=1e-9)
    assert st["signals"]["temperature"] == pytest.approx(expected, abs=1e-6)
    assert st["sensors"]["temperature"] == {"reading": st["signals"]["temperature"], "fault": "none"}
    assert st["pins"]["25"] == {"kind": "pwm", "signal": "heater", "fraction": pytest.approx(32768 / 65535)}
    # the node's ADC reads the same plant through ESP32's calibrated read_uv: mV steps and
    # the residual calibration error of one chip (boards/sim/rom/_hw.py), not a perfect line
    uv = int(con.run("print(adc.read_uv())"))
    assert abs(uv - st["pins"]["34"]["uv"]) < 6000
    assert uv * TO_DEGC == pytest.approx(st["signals"]["temperature"], abs=0.3)
    assert bench.true("temperature") == st["signals"]["temperature"]  # reading state moves nothing


def ambient_step_run(sim_nodes, name: str) -> tuple[dict, float]:
    node = sim_nodes(name, virtual_time=True, bench=THERMAL)
    with Console(node.port) as con, SimBench.connect(name, node.home) as bench:
        con.raw()
        con.run(SETUP + "time.sleep(100)\n")
        st = bench.set_input("ambient", 10)
        assert st["signals"]["ambient"] == 10.0 and st["time_s"] == 100.0
        con.run("time.sleep(200)\n")
        return bench.state(), degc(con)


def test_set_input_changes_the_trajectory_deterministically(sim_nodes):
    a, adc_a = ambient_step_run(sim_nodes, "a")
    b, adc_b = ambient_step_run(sim_nodes, "b")
    assert (a, adc_a) == (b, adc_b)  # bit for bit the same run
    heater = 100 * 32768 / 65535
    without = 20 + 0.9 * heater * (1 - math.exp(-(300 - 12) / 160))
    expected = without - 10 * (1 - math.exp(-200 / 160))  # the plant is linear in ambient
    assert a["signals"]["temperature"] == pytest.approx(expected, abs=1e-6)
    assert adc_a == pytest.approx(expected, abs=0.3)


def test_a_scheduled_disturbance_applies_at_its_plant_time(oven):
    con, bench = oven
    st = bench.set_input("ambient", 30, at_s=50)
    assert st["pending"] == 1 and st["signals"]["ambient"] == 20.0
    con.run("import time\ntime.sleep(49.5)\n")
    assert bench.state()["signals"]["ambient"] == 20.0
    con.run("time.sleep(0.5)\n")
    st = bench.state()
    assert (st["signals"]["ambient"], st["pending"]) == (30.0, 0)
    assert st["signals"]["temperature"] == 20.0  # no time has passed since the step
    con.run("time.sleep(160)\n")
    assert bench.true("temperature") == pytest.approx(30 - 10 * math.exp(-1), abs=1e-6)
    st = bench.set_param("tau_s", 80)
    with pytest.raises(BenchControlError, match="'dead_time_s' cannot change at run time"):
        bench.set_param("dead_time_s", 1)


def test_sensor_faults_show_on_the_adc_and_clear(oven):
    con, bench = oven
    con.run(SETUP + "time.sleep(200)\n")
    true = bench.true("temperature")
    assert degc(con) == pytest.approx(true, abs=0.3)

    st = bench.sensor_fault("temperature", "stuck", value=100)
    assert st["sensors"]["temperature"] == {"reading": 100.0, "fault": "stuck", "value": 100.0}
    assert degc(con) == pytest.approx(100, abs=0.3)
    con.run("time.sleep(60)\n")
    assert degc(con) == pytest.approx(100, abs=0.3)  # the plant moved on, the sensor did not
    assert bench.true("temperature") > true + 1

    bench.sensor_fault("temperature", "offset", value=-7.5)
    assert degc(con) == pytest.approx(bench.true("temperature") - 7.5, abs=0.3)

    bench.sensor_fault("temperature", "noise", std=3.0)
    reads = json.loads(con.run(
        "import json\nr = []\nfor _ in range(200):\n    time.sleep_ms(100)\n    r.append(adc.read_uv())\n"
        "print(json.dumps(r))\n"))
    assert 2.0 < statistics.stdev(v * TO_DEGC for v in reads) < 4.0

    st = bench.clear_faults()
    assert st["sensors"]["temperature"]["fault"] == "none"
    con.run("time.sleep(1)\n")
    assert degc(con) == pytest.approx(bench.true("temperature"), abs=0.3)

    # stuck without a value holds the last reading
    last = degc(con)
    bench.sensor_fault("temperature", "stuck")
    con.run("pwm.duty_u16(0)\ntime.sleep(120)\n")
    assert degc(con) == last and bench.true("temperature") < last - 5
    with pytest.raises(BenchControlError, match="unknown sensor 'humidity'"):
        bench.sensor_fault("humidity", "stuck")
    with pytest.raises(BenchControlError, match="'fault'.*'offset'"):
        bench.sensor_fault("temperature", "broken")
    with pytest.raises(BenchControlError, match="'heater' is driven by pin 25"):
        bench.set_input("heater", 50)


def test_requests_never_mix_with_console_input(oven):
    con, bench = oven
    con.write(b"\x02")  # friendly REPL
    con.read_until(b">>> ")
    con.write(b"12")
    con.read_until(b"12")
    bench.state()
    con.write(b"34+1\r")
    assert b"1235" in con.read_until(b">>> ")


def test_a_busy_node_answers_when_it_next_waits(sim_nodes):
    node = sim_nodes("rt", bench=THERMAL)  # real time
    with Console(node.port) as con, SimBench.connect("rt", node.home) as bench:
        con.raw()
        # in real time, requests are served while user code sleeps
        con.write(b"import time\nt0 = time.ticks_ms()\ntime.sleep(3)\nprint(t0, time.ticks_ms())\x04")
        con.read_until(b"OK")
        time.sleep(0.3)
        served = bench.state()["time_s"] * 1000
        start, end = (int(v) for v in con.read_until(b"\x04>", 10).split(b"\r\n")[0].split())
        assert start < served < end - 100  # answered in the middle of the sleep
        # code that never waits holds requests off until it ends
        con.write(b"t = time.ticks_ms()\nwhile time.ticks_diff(time.ticks_ms(), t) < 2500:\n    pass\n\x04")
        con.read_until(b"OK")
        with pytest.raises(BenchControlError, match="no answer to plant.state within 0.5 s"):
            bench.channel.request("plant.state", timeout=0.5)
        con.read_until(b"\x04\x04>", 10)
        assert bench.state()["type"] == "fotd"  # the late answer is skipped, not taken for this one
        # a sleep under heap_lock() stays allocation-free: the request waits for the unlock
        con.write(b"import micropython\nmicropython.heap_lock()\ntry:\n    time.sleep_ms(1500)\n"
                  b"finally:\n    micropython.heap_unlock()\nt = time.ticks_ms()\ntime.sleep_ms(500)\nprint(t)\x04")
        con.read_until(b"OK")
        time.sleep(0.2)
        served = bench.state()["time_s"] * 1000
        out = con.read_until(b"\x04>", 10)
        assert out.endswith(b"\r\n\x04\x04>")  # no MemoryError
        assert served >= int(out.split(b"\r\n")[0])  # only once the heap was unlocked


def test_clear_errors(sim_nodes, cyphy_home):
    plain = sim_nodes("plain")
    with pytest.raises(BenchControlError, match="plain has no bench: start it with --bench"):
        SimBench.connect("plain", cyphy_home)
    with pytest.raises(BenchControlError, match="no sim node named 'ghost'"):
        SimBench.connect("ghost", cyphy_home)
    # a raw client: bad requests get an error line, the node carries on
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(socket_path(plain.node.root)))
    f = s.makefile("rwb")
    for line, word in ((b"{not json\n", "Expecting"), (b"[1]\n", "JSON object"), (b'{"op": "warp"}\n', "unknown op"),
                       (b'{"op": "plant.state", "id": 7}\n', "has no bench"),
                       (b'{"op": "link.set", "drop": 2}\n', "probability")):
        f.write(line)
        f.flush()
        ans = json.loads(f.readline())
        assert ans["ok"] is False and word in ans["error"], ans
    assert ans.get("id") is None
    f.write(b'{"op": "ping", "id": "x"}\n')
    f.flush()
    assert json.loads(f.readline())["id"] == "x"
    s.close()
    plain.stop()
    with pytest.raises(BenchControlError, match="plain is not running"):
        SerialLinkFaults.connect("plain", cyphy_home)


def test_bad_requests_reach_the_node_and_get_answers(oven):
    con, bench = oven
    ch = bench.channel
    for op, fields, word in (("plant.warp", {}, "unknown plant request"),
                             ("plant.set", {"value": 1}, 'needs "input"'),
                             ("plant.set", {"input": "ambient"}, "'value': is required"),
                             ("plant.set", {"input": "ambient", "value": "hot"}, "must be a number"),
                             ("plant.sensor", {"fault": "stuck"}, 'needs "sensor"'),
                             # longer than the node's 512-byte reads: arrives in pieces
                             ("plant.set", {"input": "ambient", "value": 1, "pad": "x" * 3000}, "'pad': unknown key")):
        with pytest.raises(BenchControlError, match=word):
            ch.request(op, **fields)
    with pytest.raises(BenchControlError, match="request too large"):
        ch.request("plant.state", pad="x" * 5000)
    assert con.run("print(1+1)").strip() == "2"
    assert bench.state()["signals"]["ambient"] == 20.0


def test_input_replayed_after_a_reset_leaves_requests_out():
    from cyphy.sim.equipment import command
    from cyphy.sim.supervisor import escape, unescape

    req = command(b"P", b'{"id": 1, "op": "plant.state"}')
    assert unescape(escape(b"ab\x00c") + req + escape(b"d\x00") + b"\x00Zxx") == b"ab\x00cd\x00"


# ---------------------------------------------------------------- serial line
@pytest.fixture
def repl(sim_nodes):
    node = sim_nodes("wire", baud=0)
    with Console(node.port) as con, SerialLinkFaults.connect("wire", node.home) as link:
        con.friendly()
        yield con, link


def wait_bytes(link: SerialLinkFaults, direction: str, n: int) -> None:
    """Until n bytes have entered the line in that direction (then faults may change)."""
    deadline = time.monotonic() + 10
    while link.stats()[direction]["bytes"] < n:
        assert time.monotonic() < deadline, link.stats()
        time.sleep(0.02)


def one_bit_apart(a: int, b: int) -> bool:
    return bin(a ^ b).count("1") == 1


def test_dropped_bytes_never_arrive(repl):
    con, link = repl
    link.set(drop=1.0, direction="to_node")
    con.write(b"1+1\r")
    assert con.read_for(0.5) == b""  # the command times out
    st = link.stats()
    assert (st["to_node"]["bytes"], st["to_node"]["dropped"], st["to_node"]["delivered"]) == (4, 4, 0)
    assert st["to_node"]["drop"] == 1.0 and st["from_node"]["drop"] == 0.0
    link.clear()
    assert b"2\r\n" in con.line(b"1+1")

    # a seed gives the same losses for the same bytes
    echoes = []
    for _ in range(2):
        link.stats(reset=True)
        link.set(drop=0.5, seed=11, direction="to_node")
        con.write(b"abcdefghijklmnopqrst")
        wait_bytes(link, "to_node", 20)
        link.clear()
        echoes.append(con.read_for(0.2))
        con.write(b"\x03")
        con.read_until(b">>> ")
    assert echoes[0] == echoes[1]
    assert 3 < len(echoes[0]) < 17 and set(echoes[0]) <= set(b"abcdefghijklmnopqrst")

    link.set(drop=1.0, direction="from_node")
    con.write(b"1+1\r")
    assert con.read_for(0.5) == b""
    assert link.stats()["from_node"]["dropped"] >= len(b"1+1\r\n2\r\n>>> ")
    link.clear()
    assert b"3\r\n" in con.line(b"1+2")


def test_corrupted_bytes_arrive_altered(repl):
    con, link = repl
    typed = b"abcdefgh"
    echoes = []
    for _ in range(2):
        link.stats(reset=True)
        link.set(corrupt=1.0, seed=5, direction="from_node")
        con.write(typed)
        wait_bytes(link, "from_node", 8)
        link.clear()
        echo = con.read_for(0.2)
        echoes.append(echo)
        assert len(echo) == len(typed) and all(one_bit_apart(a, b) for a, b in zip(echo, typed))
        st = link.stats()["from_node"]
        assert (st["corrupted"], st["dropped"], st["delivered"]) == (8, 0, 8)
        con.write(b"\x03")
        con.read_until(b">>> ")
    assert echoes[0] == echoes[1]  # same seed, same damage

    link.set(corrupt=0.3, seed=2, direction="to_node")
    con.write(b"abcdefghijklmnopqrst")
    wait_bytes(link, "to_node", 20)
    link.clear()
    echo = con.read_for(0.2)
    damaged = link.stats()["to_node"]["corrupted"]
    assert 0 < damaged < 20
    assert echo != b"abcdefghijklmnopqrst"
    con.write(b"\x03")
    con.read_until(b">>> ")
    assert b"2\r\n" in con.line(b"1+1")


def test_delayed_bytes_add_latency(repl):
    con, link = repl

    def latency() -> float:
        t0 = time.monotonic()
        assert b"42\r\n" in con.line(b"6*7", timeout=10)
        return time.monotonic() - t0

    latency()
    link.set(delay_ms=500, direction="to_node")
    one = latency()
    link.set(delay_ms=500)
    both = latency()
    link.clear()
    st = link.stats()
    latency()
    assert 0.49 < one < 0.5 + 3.0
    assert 0.99 < both < 1.0 + 3.0
    assert st["to_node"]["delayed"] == 8 and st["from_node"]["delayed"] > 0
    assert st["to_node"]["dropped"] == st["to_node"]["corrupted"] == 0
    assert link.stats()["to_node"]["delayed"] == 8  # cleared: nothing delayed any more


# ---------------------------------------------------------------- UDP proxy
@pytest.fixture
def echo_server():
    """A plain UDP echo server on 127.0.0.1 (no node)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    stop = threading.Event()
    got: list[bytes] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                data, src = s.recvfrom(65535)
            except socket.timeout:
                continue
            got.append(data)
            s.sendto(data, src)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield s.getsockname(), got
    stop.set()
    t.join()
    s.close()


def client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(2)
    return c


def collect(c: socket.socket, seconds: float) -> list[bytes]:
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        c.settimeout(left)
        try:
            out.append(c.recvfrom(65535)[0])
        except socket.timeout:
            break
    c.settimeout(2)
    return out


def test_udp_proxy_relays_and_counts(echo_server):
    target, got = echo_server
    with UdpFaultProxy(target) as proxy, client() as c:
        assert proxy.address[0] == "127.0.0.1" and proxy.address != target
        c.sendto(b"hello", proxy.address)
        data, src = c.recvfrom(100)
        assert (data, src) == (b"hello", proxy.address)
        st = proxy.stats()
        assert st["to_target"]["delivered"] == st["from_target"]["delivered"] == 1
        assert st["to_target"]["bytes"] == 5 and st["errors"] == 0

        proxy.set(drop=1.0, direction="to_target")
        c.sendto(b"lost", proxy.address)
        assert collect(c, 0.3) == [] and got == [b"hello"]
        proxy.clear()
        proxy.set(drop=1.0, direction="from_target")
        c.sendto(b"lost on the way back", proxy.address)
        assert collect(c, 0.3) == [] and got[-1] == b"lost on the way back"
        st = proxy.stats(reset=True)
        assert st["to_target"]["dropped"] == 1 and st["from_target"]["dropped"] == 1

        proxy.clear()
        proxy.set(duplicate=1.0, direction="to_target")
        c.sendto(b"twice", proxy.address)
        assert collect(c, 0.3) == [b"twice", b"twice"]
        st = proxy.stats(reset=True)
        assert (st["to_target"]["duplicated"], st["to_target"]["delivered"], st["from_target"]["delivered"]) == (1, 2, 2)

        proxy.clear()  # set() replaces the faults of the direction it names, only
        proxy.set(corrupt=1.0, seed=4, direction="from_target")
        c.sendto(b"intact out", proxy.address)
        reply = c.recvfrom(100)[0]
        assert got[-1] == b"intact out" and reply != b"intact out" and len(reply) == len(b"intact out")
        assert sum(bin(a ^ b).count("1") for a, b in zip(reply, b"intact out")) == 1
        assert proxy.stats()["from_target"]["corrupted"] == 1

        proxy.set(delay_ms=150)  # both directions
        t0 = time.monotonic()
        c.sendto(b"slow", proxy.address)
        assert c.recvfrom(100)[0] == b"slow"
        assert 0.29 < time.monotonic() - t0 < 2.0
        proxy.clear()
        c.sendto(b"fast", proxy.address)
        assert c.recvfrom(100)[0] == b"fast"
        assert proxy.stats()["to_target"]["delayed"] == 1  # the slow one only


def lossy_run(target: tuple[str, int], seed: int) -> tuple[list[bytes], dict]:
    with UdpFaultProxy(target, drop=0.5, seed=seed) as proxy, client() as c:
        for i in range(40):
            c.sendto(b"%d" % i, proxy.address)
            time.sleep(0.002)
        got = collect(c, 1.0)
        return sorted(got, key=int), proxy.stats()


def test_udp_proxy_faults_are_reproducible(echo_server):
    target, _ = echo_server
    a, st = lossy_run(target, 3)
    b, _ = lossy_run(target, 3)
    c, _ = lossy_run(target, 4)
    assert a == b and a != c
    assert st["to_target"]["datagrams"] == 40
    assert len(a) == st["from_target"]["delivered"] == 40 - st["to_target"]["dropped"] - st["from_target"]["dropped"]
    assert 0 < len(a) < 30


def test_udp_proxy_in_front_of_a_sim_node(sim_nodes):
    from test_network import SETUP as HAL_SETUP
    from test_network import free_port, install_hal

    port = free_port()
    node = sim_nodes("u", baud=0)
    ip = node.node.config()["ip"]
    with Console(node.port) as con:
        con.raw()
        install_hal(con)
        con.run(HAL_SETUP + "import json, time\nassert b.wifi_connect('lab', 'secret')\n"
                f"d = b.udp({port})\nbuf = bytearray(64)\n"
                "def serve(k):\n"
                "    out = []\n"
                "    for _ in range(400):\n"
                "        r = d.recv_into(buf)\n"
                "        if r:\n"
                "            out.append(bytes(buf[:r[0]]).decode())\n"
                "            d.sendto(b'pong:' + buf[:r[0]], r[1])\n"
                "            if len(out) == k:\n"
                "                break\n"
                "        time.sleep_ms(5)\n"
                "    print(json.dumps(out))\n")
        with UdpFaultProxy((ip, port), duplicate=1.0, delay_ms=100) as proxy, client() as c:
            proxy.set(duplicate=1.0, delay_ms=100, direction="to_target")
            proxy.set(delay_ms=100, direction="from_target")
            t0 = time.monotonic()
            c.sendto(b"ping", proxy.address)
            assert json.loads(con.run("serve(2)")) == ["ping", "ping"]  # duplicated on the way in
            replies = [c.recvfrom(100), c.recvfrom(100)]
            assert time.monotonic() - t0 > 0.2
            assert replies == [(b"pong:ping", proxy.address)] * 2
            st = proxy.stats(reset=True)
            assert (st["to_target"]["duplicated"], st["to_target"]["delivered"]) == (1, 2)
            assert (st["from_target"]["datagrams"], st["from_target"]["delayed"], st["from_target"]["delivered"]) == (2, 2, 2)

            proxy.set(drop=1.0, direction="from_target")
            c.sendto(b"hi", proxy.address)
            assert json.loads(con.run("serve(1)")) == ["hi"]  # the node answered ...
            assert collect(c, 0.3) == []  # ... and the answer was lost
            assert proxy.stats()["from_target"]["dropped"] == 1
