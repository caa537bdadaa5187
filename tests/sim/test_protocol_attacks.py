"""Issue 13's findings against the node, each reproduced on a sim node running the real
firmware, over its real UDP socket and serial console: replays that held off the comms
watchdog or evicted cached answers, an amplifying HELLO, floods, reads stitched across
sessions, a late fail-safe. The attackers are real sockets; nothing here fakes the node."""

from __future__ import annotations

import copy
import os
import queue
import socket
import statistics
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from protonode import KEY_HEX, boot  # noqa: E402
from serial_console import Console  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402
from test_protocol_security import Tap  # noqa: E402
from test_protocol_udp import WIFI, free_udp_port, wait_online  # noqa: E402

from cyphy import codec as P  # noqa: E402
from cyphy.client import Session  # noqa: E402
from cyphy.hil import attacks as A  # noqa: E402
from cyphy.hil.attacks import Quiet, leave  # noqa: E402
from cyphy.links import SerialLink, UdpLink  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402

KEY = P.key_from_hex(KEY_HEX)
PERIOD_MS = 100                              # CONFIG's loop: 10 Hz


def two_loops(cfg: dict) -> dict:
    """cfg with a second loop (its own ADC pin and PWM output): longer answers."""
    c = copy.deepcopy(cfg)
    t, h = (dict(ch) for ch in c["channels"])
    t.update(name="temp_b", pin=35)
    h.update(name="heater_b", pin=26)
    lp = copy.deepcopy(c["loops"][0])
    lp.update(name="oven_b", sensor="temp_b", actuator="heater_b")
    c["channels"] += [t, h]
    c["loops"].append(lp)
    return c


def udp_node(sim_nodes, name: str, timeout_ms: int = 0, loops: int = 1) -> tuple[str, int, Console]:
    port = free_udp_port()
    cfg = copy.deepcopy(CONFIG) if loops == 1 else two_loops(CONFIG)
    cfg.update(name=name, comms_timeout_ms=timeout_ms, comms={"udp": True, "udp_port": port})
    serial_port = boot(sim_nodes, name, config=cfg, secrets=WIFI)
    ip = Node.named(name).config()["ip"]
    wait_online([ip], port)
    con = Console(serial_port)
    con.raw()
    return ip, port, con


def _lost_ack(s: Session, dropping: dict, payload: bytes) -> tuple[int, queue.Queue]:
    """Send a COMMAND whose ACK the tap drops (dropping["on"]); its SEQ and the queue its
    answer will come to, should the node answer a retry."""
    seq = s._next_seq()
    q: queue.Queue = queue.Queue()
    s._waiting[seq] = q
    dropping["on"] = True
    s._send(P.COMMAND, payload, seq)                 # applied; its ACK is lost
    time.sleep(0.4)
    dropping["on"] = False
    return seq, q


def test_replayed_heartbeats_do_not_hold_off_the_comms_timeout(sim_nodes):
    # Finding 1: every frame with a valid tag refreshed the session and the comms watchdog
    # before the replay check: replays of one recorded HEARTBEAT kept a heater on.
    ip, port, con = udp_node(sim_nodes, "replay-wd", timeout_ms=600)
    tap = Tap(Quiet(UdpLink(ip, port)))
    s = Session(tap, KEY)
    s.open()
    s.read("oven.setpoint")
    time.sleep(1.2)                          # at least one heartbeat goes out
    beat = [f for f in tap.sent if P.parse(f).type == P.HEARTBEAT][-1]
    leave(s)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:            # 20 replays, from the host's own address
        tap.link.send(beat)
        time.sleep(0.1)
    out = con.run("print(node._comms_lost, node.loop('oven').mode)").split()
    assert out == ["True", "failsafe"], out
    con.close()


def test_replays_do_not_evict_the_answer_a_retry_needs(sim_nodes):
    # Finding 2: "stale" answers to replays went into the 8-entry reply cache: a lost ACK
    # followed by 8 replayed frames, and the host's retry was answered "stale" and the
    # command sent again under a fresh SEQ: applied twice.
    dropping = {"on": False, "n": 0}

    def drop_acks(f: bytes) -> bool:
        if dropping["on"] and P.parse(f).type == P.ACK:
            dropping["n"] += 1
            return True
        return False

    tap = Tap(SerialLink(boot(sim_nodes)), drop_acks)
    with Session(tap, KEY) as s:
        s.open()
        for v in (41.0, 42.0, 43.0, 44.0, 45.0, 46.0, 47.0, 48.0, 49.0):
            s.set("oven", "setpoint", v)
        old = [f for f in tap.sent if P.parse(f).type == P.COMMAND]
        per_read = A.read_cost(s)
        applied0 = A.applied(s)
        seq, q = _lost_ack(s, dropping, P.cmd_set(0, 0, 50.0))
        for f in old:                                      # 9 recorded frames replayed
            tap.link.send(f)
        time.sleep(0.5)
        s._send(P.COMMAND, P.cmd_set(0, 0, 50.0), seq)      # the host's retry
        kind, body = q.get(timeout=3)
        assert kind == P.ACK, body
        s._waiting.pop(seq, None)
        assert dropping["n"] == 1
        c = s.read("info")["counters"]
        assert c["applied"] == applied0 + per_read + 1, c   # the READ of applied0, the set once
        assert s.read("oven.setpoint") == 50.0


def test_reads_belong_to_the_session_that_asked(sim_nodes):
    # Finding 9: one cached READ text for all sessions: two hosts reading long answers at
    # once got pieces of each other's text.
    ip, port, con = udp_node(sim_nodes, "two-hosts", loops=2)
    con.close()
    import json
    with Session(UdpLink(ip, port), KEY) as a, Session(UdpLink(ip, port), KEY) as b:
        a.open()
        b.open()
        values = [61.125, 62.5, 63.125, 64.25, 65.125, 66.5, 67.125]  # texts of other lengths
        a.set("oven", "setpoint", values[0])
        differed = 0
        for k in range(6):
            ra = a.request(P.READ, P.read_req("state", 0))        # a's first piece
            b.set("oven", "setpoint", values[k + 1])              # the answer changes...
            rb = b.request(P.READ, P.read_req("state", 0))        # ...and b reads it
            total = P.get_u16(ra, 0)
            assert total > len(ra) - 2, "the node's state must take more than one piece"
            text = ra[2:]
            while len(text) < total:
                r = a.request(P.READ, P.read_req("state", len(text)))
                assert P.get_u16(r, 0) == total, "a's pieces come from another text"
                text += r[2:]
            assert len(text) == total
            mine = json.loads(text)                                # whole, not stitched
            assert mine["oven"]["setpoint"] == pytest.approx(values[k])
            differed += P.get_u16(rb, 0) != total                  # b's text was another
            a.set("oven", "setpoint", values[k + 1])
        assert differed >= 2


def _hello_req(pad: int) -> bytes:
    return P.build(P.HOST | P.LONG, P.HELLO_REQ, P.NODE_ANY, time.time_ns() // 10_000,
                   P.hello_req(os.urandom(P.NONCE_LEN), pad))


def test_no_answer_to_an_unauthenticated_frame_is_larger_than_it(sim_nodes):
    # Finding 4: a short HELLO_REQ got a much larger HELLO (an amplifier towards a spoofed
    # address); replayed frames got NACKs 2.5x their size.
    ip, port, con = udp_node(sim_nodes, "amplifier")
    con.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(0.5)
        u.sendto(_hello_req(0), (ip, port))             # unpadded: no answer
        with pytest.raises(socket.timeout):
            while True:
                d, _ = u.recvfrom(2048)
                if P.parse(d).type == P.HELLO and P.parse_payload(P.HELLO, P.parse(d).payload)["nonce"] != bytes(8):
                    break
        req = _hello_req(P.HELLO_REQ_PAD)               # padded, as hosts send it
        u.sendto(req, (ip, port))
        while True:
            d, _ = u.recvfrom(2048)
            if P.parse(d).type == P.HELLO and P.parse_payload(P.HELLO, P.parse(d).payload)["nonce"] != bytes(8):
                break
        assert len(d) <= len(req)


def test_an_established_host_reads_through_a_flood(sim_nodes):
    # Finding 4 / requirement 2: junk at 1000/s and HELLO_REQ at 200/s from other
    # addresses. The node read at most 8 datagrams a pass, and the HELLOs evicted sessions.
    ip, port, con = udp_node(sim_nodes, "flooded")

    def overruns() -> int:
        return int(con.run("print(node.stats()['oven']['overruns'])"))

    overruns0 = overruns()
    with Session(UdpLink(ip, port), KEY) as s:
        s.open()
        with A.Flood(ip, port, junk_per_s=1000, hello_per_s=200) as flood:
            time.sleep(0.5)
            # reads every 10 ms: 190-330 in 4 s, so that p99 is the 99th percentile its
            # name says (of the ~63 reads every 50 ms gave, it was the maximum: one stall
            # of a loaded CI machine, 308 ms once, failed it)
            lat = A.read_latencies(s, "oven.setpoint", 4.0, gap=0.01)
        assert len(lat) >= 150, len(lat)
        assert s.read("oven.setpoint") == 60.0
    sent = flood.sent
    assert sent["junk"] > 2500 and sent["hello"] > 500, sent
    assert A.p99(lat) < 2 * PERIOD_MS + 50, (A.p99(lat), statistics.median(lat), len(lat))
    assert sent["bytes_in"] <= sent["bytes_out"]
    assert overruns() == overruns0
    con.close()


def test_failsafe_within_one_period_of_the_timeout_over_udp(sim_nodes):
    # Finding 6: the timeout ran from when the pass read the socket, not the datagram's
    # arrival: outputs went safe up to a period late. The node notes when the output went
    # to its fail-safe value (at the PWM) and when the last fresh frame came.
    ip, port, con = udp_node(sim_nodes, "failsafe", timeout_ms=500)
    con.run(A.FAILSAFE_SPY.format(loop="oven"))
    trials = [A.failsafe_trial(lambda: UdpLink(ip, port), KEY, con.run, "oven", 500,
                               0.2 + 0.013 * k) for k in range(8)]
    assert max(t.dated_late_ms for t in trials) <= 0, trials   # never dated later than true
    # within one period of the true expiry, to the precision of the measurement (the
    # console round trip that read the node's clock, spread_ms)
    assert all(t.late_min_ms <= PERIOD_MS for t in trials), trials
    assert all(t.late_ms <= PERIOD_MS + t.spread_ms for t in trials), trials
    con.close()


def test_forged_and_replayed_frames_change_nothing(sim_nodes):
    ip, port, con = udp_node(sim_nodes, "forgery")
    con.close()
    link = Quiet(UdpLink(ip, port))
    with Session(link, KEY) as s:
        s.open()
        for v in (40.0, 41.0, 42.0):
            s.set("oven", "setpoint", v)
        recorded = [f for f in link.sent if P.parse(f).type in (P.COMMAND, P.HEARTBEAT, P.READ)]
        assert A.forgeries(s, 200).changed == 0
        assert A.replays(s, recorded, 200).changed == 0
        assert s.read("oven.setpoint") == 42.0
    link.shut()


def test_commands_through_a_lossy_udp_link_apply_exactly_once(sim_nodes):
    ip, port, con = udp_node(sim_nodes, "lossy")
    con.close()
    relay = A.UdpFaults(ip, port, drop=0.05, corrupt=0.05, seed=7)
    try:
        with Session(UdpLink(relay.ip, relay.port), KEY, timeout=1.0) as s:
            s.open()
            r = A.exactly_once(s, 60, "oven")
    finally:
        relay.close()
    assert relay.dropped > 0 and relay.corrupted > 0
    assert r.violations == 0 and r.failed == 0, r


def test_failsafe_within_one_period_of_the_timeout_over_serial(sim_nodes):
    cfg = copy.deepcopy(CONFIG)
    cfg.update(name="failsafe-serial", comms_timeout_ms=500)
    port = boot(sim_nodes, "failsafe-serial", config=cfg)

    def repl(code: str) -> str:
        with Console(port) as c:
            c.raw()
            return c.run(code)

    repl(A.FAILSAFE_SPY.format(loop="oven"))
    trials = [A.failsafe_trial(lambda: SerialLink(port), KEY, repl, "oven", 500, 0.2 + 0.013 * k)
              for k in range(4)]
    assert max(t.dated_late_ms for t in trials) <= 0, trials
    assert all(t.late_min_ms <= PERIOD_MS for t in trials), trials
    assert all(t.late_ms <= PERIOD_MS + t.spread_ms for t in trials), trials


def test_the_api_recovers_a_session_the_node_ended(sim_nodes):
    # Requirement 3: the host's API recovers a broken session on its own. The host goes
    # quiet longer than the node keeps an idle session (5 s); its next command gets no
    # answer, so the client says HELLO again by itself and the command is applied once.
    ip, port, con = udp_node(sim_nodes, "recover")
    con.close()
    with Session(UdpLink(ip, port), KEY, timeout=2.0) as s:
        s.open()
        cost = A.read_cost(s)
        before = A.applied(s)
        s.heartbeats = False
        time.sleep(6.0)                      # the node ends the idle session
        s.heartbeats = True
        s.set("oven", "setpoint", 44.0)
        assert s.stats.reopened == 1
        assert s.read("oven.setpoint") == 44.0
        assert A.applied(s) - before == cost + 2   # the READ of `before`, the set, the read


def test_a_retry_in_a_new_session_is_answered_not_applied_again(sim_nodes):
    # The host's ACK was lost and it said HELLO again (a break on the line): its retry, in
    # the new session, must get the answer of the old one, not apply the command twice.
    dropping = {"on": False}

    def drop_acks(f: bytes) -> bool:
        return dropping["on"] and P.parse(f).type == P.ACK

    ip, port, con = udp_node(sim_nodes, "inherit")
    con.close()
    tap = Tap(UdpLink(ip, port), drop_acks)
    with Session(tap, KEY) as s:
        s.open()
        cost = A.read_cost(s)
        before = A.applied(s)
        seq, q = _lost_ack(s, dropping, P.cmd_set(0, 0, 51.0))
        s.open()                                          # a new session (new EPOCH)
        s._send(P.COMMAND, P.cmd_set(0, 0, 51.0), seq)      # the retry, same SEQ
        kind, _ = q.get(timeout=3)
        assert kind == P.ACK
        s._waiting.pop(seq, None)
        c = s.read("info")["counters"]
        assert c["applied"] - before == cost + 1, c       # the READ of `before`, the set once
        assert c["duplicate"] >= 1, c


def test_the_udp_poll_allocates_nothing_when_idle(sim_nodes):
    # The node looks at its socket every 2 ms: Datagram.ready() must cost no heap.
    ip, port, con = udp_node(sim_nodes, "poll-alloc")
    out = con.run(
        "import micropython\n"
        "d = node.comms.net.udp.dgram\n"
        "def many():\n"
        "    i = 0\n"
        "    while i < 50:\n"
        "        d.ready()\n"
        "        i += 1\n"
        "many()\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    many()\n"
        "    r = 'none'\n"
        "except MemoryError:\n"
        "    r = 'allocates'\n"
        "micropython.heap_unlock()\n"
        "print(r, node.comms.net.info()['udp_polled'])\n")
    assert out.split() == ["none", "timer"], out
    con.close()
