# The host's side of a protocol session, written once for every host: cyphy.client (the
# CLI, the Python API, the HIL plugin), cyphy.discovery, a node following another node
# (peer.py) and the fleet gateway. docs/protocol.md, "Sessions" and "Replay".
#
# - check_hello: whether a node's HELLO may open a session, and with which of the keys the
#   host holds for the node's name (during a key change: the old and the new one).
# - NodeSeq: the node's 32-bit sequence from the 16-bit SEQ of its frames (the host keeps
#   the rollover count, as SRTP does) and a sliding window against replays.
# - HostSide: one session's state (key, EPOCH, node id, loops, NodeSeq) and the check of
#   every frame the node sends in it (tag, EPOCH, sequence).
# Plain code that runs on MicroPython too (a node follows its peer with it): no typing, no
# dataclasses; it runs in a host thread or in the node's service, never in a control tick.
from . import proto as P

WINDOW = 64                 # node frames accepted out of order within this many sequence numbers


def verify(f, h, held):
    """The key among `held` that the HELLO frame f (parsed body h) verifies with, or None."""
    for k in held:
        if f.check(k, h["epoch"], h["roc"]):
            return k
    return None


def check_hello(f, h, held, unprovisioned=False):
    """(key, None) to open a session with key (None: an unauthenticated node the host may
    talk to), or (None, why) when the HELLO must be refused. held: the keys this host
    holds for the node (given, or from its key store for h["name"])."""
    name = h["name"]
    if not f.auth:
        if not f.check():
            return None, "the node's HELLO is corrupt (bad CRC)"
        if held and not unprovisioned:
            return None, ("node %r is unauthenticated (it has no key) but this host holds a "
                          "key for %r: it may be an impostor, or a node that lost its key; "
                          "provision it again (cyphy provision), or give --unprovisioned if "
                          "you mean to talk to an unprovisioned node" % (name, name))
        return None, None
    if not held:
        return None, ("node %r authenticates its frames and no key for it was found: give it "
                      "with --key-file or CYPHY_KEY, or provision the node from this machine "
                      "(cyphy provision)" % name)
    key = verify(f, h, held)
    if key is None:
        which = "this key" if len(held) == 1 else \
            "any of the %d keys this host holds for it" % len(held)
        return None, "the node's HELLO does not verify with %s: wrong key for this node?" % which
    return key, None


class NodeSeq:
    """The node's 32-bit sequence (EPOCH-scoped) from its 16-bit SEQ, and the replay window."""

    def __init__(self, start):
        self.hi = start
        self.seen = 1  # bit i: hi - i was accepted

    def extend(self, seq16):
        ext = (self.hi & ~0xFFFF) | seq16
        if ext - self.hi > 0x8000:
            ext -= 0x10000
        elif self.hi - ext > 0x8000:
            ext += 0x10000
        return ext

    def accept(self, ext):
        """Gap before ext (>= 0), -1 for a late frame filling an earlier gap, or None for a
        replay or a frame older than the window."""
        if ext > self.hi:
            gap = ext - self.hi - 1
            shift = ext - self.hi
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.hi = ext
            return gap
        back = self.hi - ext
        if back >= WINDOW or self.seen & (1 << back):
            return None
        self.seen |= 1 << back
        return -1


# HostSide.accept()'s verdicts besides a gap
NOT_OURS = "not_ours"       # another node's, a host's, or before the session
BAD_TAG = "bad_tag"
REPLAYED = "replayed"


class HostSide:
    """One session with a node, the host's half: opened by start() with the HELLO that
    answered our nonce; accept() then checks each of the node's frames."""

    def __init__(self):
        self.key = None
        self.epoch = b"\0\0\0\0"
        self.node_id = None
        self.loops = ()
        self.rx = None

    def start(self, f, h, key):
        self.key = key
        self.epoch = h["epoch"]
        self.node_id = f.node
        self.loops = h["loops"]
        self.rx = NodeSeq((h["roc"] << 16) | f.seq)

    def end(self):
        self.rx = None
        self.node_id = None

    def accept(self, f):
        """A parsed frame from the node: its gap (>= 0, or -1 for a late one) when it is
        fresh and authentic in this session, else NOT_OURS, BAD_TAG or REPLAYED."""
        if self.rx is None or f.from_host or f.node != self.node_id:
            return NOT_OURS
        ext = self.rx.extend(f.seq)
        ok = f.check(self.key, self.epoch, ext >> 16) if self.key else (not f.auth and f.check())
        if not ok:
            return BAD_TAG
        gap = self.rx.accept(ext)
        return REPLAYED if gap is None else gap

    def frame(self, ftype, seq, payload=b""):
        """A host frame of this session (tagged with its key and EPOCH when it has a key)."""
        nid = P.NODE_ANY if self.node_id is None else self.node_id
        return P.build(P.HOST | P.LONG, ftype, nid, seq, payload, self.key, self.epoch)
