"""cyphy_node.hostside: the host's side of a session, the one piece the client, discovery,
a following node (peer.py) and the gateway share: whether a HELLO opens a session and with
which key, and the check of every node frame in it (tag, EPOCH, sequence, replay window)."""

from __future__ import annotations

import pytest

from cyphy import codec as P
from cyphy_node import hostside as H

KEY = P.Key(b"k" * 32)
OTHER = P.Key(b"o" * 32)
EPOCH = b"\x01\x02\x03\x04"
NONCE = b"n" * P.NONCE_LEN


def hello(key=KEY, roc=0, seq=5, name="oven-1"):
    body = P.hello(EPOCH, NONCE, roc, P.CAP_AUTH if key else 0, b"\x00" * 6, ["oven"], name,
                   "sim", "1.0")
    data = P.build(P.LONG, P.HELLO, 7, (roc << 16) | seq, body, key=key, epoch=EPOCH, roc=roc)
    f = P.parse(data)
    return f, P.parse_payload(P.HELLO, f.payload)


def node_frame(seq32, key=KEY, node=7, ftype=P.HEARTBEAT, payload=b""):
    return P.parse(P.build(0, ftype, node, seq32 & 0xFFFF, payload, key=key, epoch=EPOCH,
                           roc=seq32 >> 16))


def test_check_hello_picks_the_key_it_verifies_with():
    f, h = hello()
    assert H.check_hello(f, h, [OTHER, KEY]) == (KEY, None)
    key, why = H.check_hello(f, h, [OTHER])
    assert key is None and "does not verify with this key" in why
    key, why = H.check_hello(f, h, [OTHER, P.Key(b"x" * 32)])
    assert "any of the 2 keys" in why
    key, why = H.check_hello(f, h, [])
    assert key is None and "no key for it was found" in why


def test_an_unauthenticated_hello_is_refused_when_a_key_is_held():
    f, h = hello(key=None)
    assert H.check_hello(f, h, []) == (None, None)
    key, why = H.check_hello(f, h, [KEY])
    assert key is None and "impostor" in why
    assert H.check_hello(f, h, [KEY], unprovisioned=True) == (None, None)


def test_every_frame_is_checked_once_in_its_session():
    f, h = hello(seq=5)
    side = H.HostSide()
    assert side.accept(node_frame(6)) == H.NOT_OURS           # no session yet
    side.start(f, h, KEY)
    assert side.accept(node_frame(6)) == 0
    assert side.accept(node_frame(6)) == H.REPLAYED
    assert side.accept(node_frame(9)) == 2                    # 7 and 8 missing
    assert side.accept(node_frame(7)) == -1                   # late: fills a gap
    assert side.accept(node_frame(7)) == H.REPLAYED
    assert side.accept(node_frame(10, key=OTHER)) == H.BAD_TAG
    assert side.accept(node_frame(10, node=8)) == H.NOT_OURS
    assert side.accept(node_frame(9 - H.WINDOW)) == H.REPLAYED   # older than the window
    # the 16-bit SEQ rolls over: the host keeps the rollover count (from the nearest
    # 32-bit value: a jump of more than half the 16-bit space cannot be told apart)
    assert side.accept(node_frame(0x7000)) == 0x7000 - 9 - 1
    assert side.accept(node_frame(0xE000)) == 0xE000 - 0x7000 - 1
    assert side.accept(node_frame(0x10002)) == 0x10002 - 0xE000 - 1
    assert side.accept(node_frame(0x10002 + 0x9000)) == H.BAD_TAG
    side.end()
    assert side.accept(node_frame(0x10003)) == H.NOT_OURS


@pytest.mark.parametrize("roc", [0, 3])
def test_host_frames_carry_the_sessions_key_and_epoch(roc):
    f, h = hello(roc=roc)
    side = H.HostSide()
    side.start(f, h, KEY)
    g = P.parse(side.frame(P.HEARTBEAT, 42))
    assert g.from_host and g.node == 7 and g.check(KEY, EPOCH, 0)
    assert not g.check(OTHER, EPOCH, 0)
