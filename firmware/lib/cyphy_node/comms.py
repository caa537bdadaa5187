# The node's end of the cyphy protocol (docs/protocol.md): sessions with hosts over the
# serial console (console.py) and UDP (udp.py), telemetry, commands applied exactly once, events.
#
# The control pass calls sample() (allocation-free: values go into a preallocated batch).
# Everything else here (sessions, counters, the reply cache, the frame buffers, writing to
# the ports) belongs to the node's service, a soft callback of its own that never runs
# inside a control pass (node.py, "Contexts and owners"); it may allocate (sealing a frame
# builds hashlib objects: MicroPython's sha256 cannot be reset or copied). serve() runs in
# the main thread: it only reads the console and hands each whole frame to the service.
import time

from . import proto as P
from . import requests as R

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MAX_SESSIONS = const(4)
_SESSION_IDLE_MS = const(5000)   # a session no host frame has renewed for this long ends
_WINDOW = const(16)              # host SEQs remembered per session: a frame is fresh if it
                                 # is newer than all of them, or newer than the oldest and
                                 # not among them (a host's frames may be reordered)
_HELLO_PER_S = const(8)          # HELLO answers per second, all senders together
_TAKEOVER_MS = const(2500)       # an authenticated session gives way to a new host only
                                 # after this long without a fresh frame
_HEARTBEAT_MS = const(1000)
_SERVICE_MS = const(2)           # service() does its checks at most this often
_RECENT = const(8)               # replies kept for duplicate requests (exactly-once)
_MAX_BATCH = const(16)


def _urandom(n):
    try:
        import os
        return os.urandom(n)
    except (ImportError, AttributeError):
        import random
        return bytes([random.getrandbits(8) for _ in range(n)])


class Session:
    """One host on one port (the serial console, or a UDP address)."""

    def __init__(self, port, addr, nonce):
        self.port = port
        self.addr = addr
        self.nonce = nonce
        self.epoch = _urandom(4)     # fresh per session: frames of older sessions fail
        self.seq = 0                 # our SEQ (16 bits) ...
        self.roc = 0                 # ... and its rollover count: 32 bits in all
        self.seen = []               # the _WINDOW highest host SEQs accepted, ascending
        self.recent = []             # [[host seq, reply frame, type, payload]], newest last
        self.authed = False          # a fresh authentic frame from the host since HELLO
        self.heard = time.ticks_ms() # the last fresh authentic frame's arrival
        self.read = None             # (path, JSON text) of this session's last READ
        self.period_ms = 0           # telemetry subscription (0: none)
        self.batch = 1
        self.stats_ms = 0
        self.next_stats = 0
        self.next_hb = 0

    def fresh(self, seq):
        """True if host SEQ seq was never accepted and is inside the window."""
        w = self.seen
        if seq in w:
            return False
        return len(w) < _WINDOW or seq > w[0]

    def accept(self, seq):
        w = self.seen
        i = len(w)
        while i and w[i - 1] > seq:
            i -= 1
        w.insert(i, seq)
        if len(w) > _WINDOW:
            w.pop(0)


class Endpoint:
    """Node-side protocol endpoint. node: a cyphy_node.node.Node; key: proto.Key or None
    (no key: plain frames with a CRC, for bench work before provisioning)."""

    def __init__(self, node, key=None, node_id=1, name="node", firmware="?"):
        self.node = node
        self.key = key
        self.node_id = node_id
        self.name = name
        self.firmware = firmware
        self.ports = []
        self.sessions = []
        self.counters = [0] * len(P.COUNTERS)  # indexed by P.C_*
        self.caps = P.CAP_SERIAL | P.CAP_AUTOTUNE | P.CAP_CONFIG | (P.CAP_AUTH if key else 0)
        self.nloops = len(node.loops)
        self.loops = node.loops
        # signals after the loops in each sample (protocol 1.2): blocks, device channels
        sig = node.signals()
        self.signal_names = [n for n, _ in sig]
        self.sig_src = tuple([o for _, o in sig])
        self.nsig = len(self.sig_src)
        # telemetry batches: the pass fills one while service() sends the other
        self.sample_bytes = self.nloops * P.VALUES_PER_LOOP * 4 + self.nsig * 4
        n = 4 + _MAX_BATCH * self.sample_bytes
        self.max_batch = _MAX_BATCH
        self._fill = bytearray(n)
        self._ready = bytearray(n)
        self._ready_len = 0
        self._k = 0                  # samples in _fill
        self._batch = 1
        self._period = 0             # ms between samples (0: telemetry off)
        self._next = 0
        self._next_service = 0
        self._events = []
        self._frame = bytearray(P.MAX_FRAME + P.TAG_LEN)
        self._hello_tokens = _HELLO_PER_S
        self._hello_refill = time.ticks_ms()
        self._announce = None        # the Session-like counter of our announcements
        self.followers = []          # peer.Follower: loops following another node (UDP)
        self.net = None              # net.Net: Wi-Fi and the UDP port, when comms.udp is on
        node.log.listener = self._fault_event

    def add_port(self, port):
        self.ports.append(port)
        if getattr(port, "udp", False):
            self.caps |= P.CAP_UDP

    # ---- sampling: runs in the control pass, allocation-free ----

    # Each function here is kept small: MicroPython heap-allocates the frame of a function
    # needing more than about 11 words of locals and stack, on every call.

    def sample(self, now_ms):
        if self._period and time.ticks_diff(now_ms, self._next) >= 0:
            self._take(now_ms)

    def _take(self, now):
        nxt = time.ticks_add(self._next, self._period)
        self._next = now if time.ticks_diff(now, nxt) > 0 else nxt  # late: no burst
        k = self._k
        if k == 0:
            P.put_u32(self._fill, 0, now)
        self._put_all(4 + k * self.sample_bytes)
        k += 1
        if k >= self._batch:
            self._swap(4 + k * self.sample_bytes)
            k = 0
        self._k = k

    def _put_all(self, o):
        i = 0
        while i < self.nloops:
            self._put_loop(o, self.loops[i])
            o += 16
            i += 1
        i = 0
        while i < self.nsig:
            self._w(o, self.sig_src[i].value)
            o += 4
            i += 1

    def _swap(self, n):
        if self._ready_len:
            self.counters[P.C_DROPPED] += 1  # the previous batch was never sent
        b = self._fill
        self._fill = self._ready
        self._ready = b
        self._ready_len = n

    def _put_loop(self, o, lp):
        self._w(o, (lp.pid or lp.onoff).setpoint)
        self._w(o + 4, lp.y)
        self._w(o + 8, lp.u)
        self._w(o + 12, P.loop_status(lp))

    def _w(self, o, v):
        P.put_i32(self._fill, o, v)

    # ---- outside the ticks ----

    def service(self, now_ms=None, urgent=0):
        """Poll the ports, send telemetry, statistics, heartbeats and events, end idle
        sessions. The node's service runs it after every pass (cheap when there is nothing
        to do), and at once (urgent) when serve() hands over a frame."""
        now = time.ticks_ms() if now_ms is None else now_ms
        if not urgent and time.ticks_diff(now, self._next_service) < 0:
            return
        self._next_service = time.ticks_add(now, _SERVICE_MS)
        if self.net is not None:
            self.net.poll(now)
        for port in self.ports[:]:       # a port may leave while polled
            port.poll(self)
            if getattr(port, "backlog", False):
                self.node.more_service()  # more waiting: another service pass at once
        for fl in self.followers:
            fl.service(now)
        if self._ready_len:
            self._send_telemetry()
        if self._events:
            ev = self._events
            self._events = []
            for p in ev:
                self._to_all(P.EVENT, p)
        for s in self.sessions[:]:
            if time.ticks_diff(now, s.heard) > _SESSION_IDLE_MS:
                self.end(s)
                continue
            if s.authed and time.ticks_diff(now, s.next_hb) >= 0:
                s.next_hb = time.ticks_add(now, _HEARTBEAT_MS)
                self.send(s, P.HEARTBEAT, self._heartbeat(now))
            if s.stats_ms and time.ticks_diff(now, s.next_stats) >= 0:
                s.next_stats = time.ticks_add(now, s.stats_ms)
                self.send(s, P.STATS, P.stats(now, self._stats()))
        if self.node._tuning:
            self._watch_tunes()

    def _stats(self):
        st = self.node.stats()
        return [st.get(lp.name, {}) for lp in self.loops]

    def _heartbeat(self, now):
        state = 1 if self.node.running() else 0
        for lp in self.loops:
            if lp.fault:
                state |= 2
        return P.heartbeat(now, state, self.counters)

    def _send_telemetry(self):
        n = self._ready_len
        self._ready_len = 0
        payload = memoryview(self._ready)[:n]
        for s in self.sessions:
            if s.period_ms:
                self.send(s, P.TELEMETRY, payload)

    def _to_all(self, ftype, payload):
        for s in self.sessions:
            if s.authed:
                self.send(s, ftype, payload)

    def _fault_event(self, t_ms, loop, kind, value, text):
        # FaultLog.flush() reports each record here (outside the tick)
        if self.sessions:
            self._events.append(P.event(P.EV_FAULT, t_ms, loop, kind, value, text))

    def log(self, text, level=0):
        """Send a log line to every host in session (user code may call it)."""
        self._events.append(P.event(P.EV_LOG, time.ticks_ms(), 255, level, 0, text))

    def send(self, s, ftype, payload):
        """Build, seal and send one frame to session s; returns the frame."""
        frame = self._seal(s, ftype, payload)
        s.port.send(frame, s.addr)
        return frame

    def _seal(self, s, ftype, payload):
        b = self._frame
        n = P.put_header(b, 0, ftype, self.node_id, s.seq)
        m = len(payload)
        if n + m + P.TAG_LEN > P.MAX_FRAME:
            raise P.ProtoError("a %d-byte payload does not fit a frame" % m, P.R_INTERNAL)
        b[n:n + m] = payload
        n = P.seal(b, n + m, self.key, s.epoch, s.roc)
        frame = bytes(b[:n])
        s.seq += 1
        if s.seq > 0xFFFF:
            s.seq = 0
            s.roc += 1
            if s.roc > 0xFFFF:       # 2**32 frames: start over under a new epoch
                s.roc = 0
                s.epoch = _urandom(4)
        return frame

    def end(self, s):
        if s in self.sessions:
            self.sessions.remove(s)
            self.update_period()
        s.port.ended(s)

    # ---- receiving ----

    def receive(self, port, addr, data):
        """One frame (bytes, serial chunks already COBS-decoded) from a host. Never
        raises: whatever goes wrong is counted (node.comms_errors) and the node runs on."""
        try:
            self._receive(port, addr, data)
        except Exception as e:  # noqa: BLE001
            self.node.comms_errors += 1
            self.node.comms_last_error = e

    def _receive(self, port, addr, data):
        # Cheap checks first: whatever an unauthenticated sender can make us do is bounded
        # (a parse, at most two tag checks for an address in session, no answer but a HELLO
        # no larger than its request). Only a fresh authentic frame changes anything.
        c = self.counters
        try:
            f = P.parse(data)
        except P.ProtoError:
            c[P.C_BAD_FRAME] += 1
            return
        if not f.from_host:
            for fl in self.followers:    # a peer we follow answering us
                if fl.addr == addr:
                    fl.receive(f)
            return
        if f.node != self.node_id and f.node != P.NODE_ANY:
            return                       # another node's frame: not for us
        if f.type == P.HELLO_REQ:
            self._hello(port, addr, f)
            return
        if f.hdr != P.HDR_LONG:
            c[P.C_BAD_FRAME] += 1        # host frames carry a 6-byte SEQ
            return
        s = self._authentic(port, addr, f)
        if s is None:
            return
        seq = f.seq
        if not s.authed:
            self._inherit(s)             # the host went on from an older session here
        for r in s.recent:
            if r[0] == seq:              # a retry of a request we answered: same answer,
                c[P.C_DUPLICATE] += 1    # nothing else changes
                if r[1] is None:         # answered in the older session: sealed anew
                    r[1] = self.send(s, r[2], r[3])
                else:
                    port.send(r[1], addr)
                if not s.authed:         # the host is in s now: the older one is over
                    s.authed = True
                    self._retire(s)
                return
        if not s.fresh(seq):
            c[P.C_STALE] += 1            # a replay, or older than the window: dropped
            return
        s.accept(seq)
        t = getattr(port, "arrived", None)   # when it came, at the latest (see UdpPort)
        if t is None:
            t = time.ticks_ms()
        s.heard = t
        port.heard = t
        self.node.touch(t)
        if not s.authed:
            s.authed = True
            self._retire(s)
        if f.type == P.BYE:
            self.end(s)
        elif f.type != P.HEARTBEAT:
            self._request(s, f, bytes(f.data[3:9]))

    def _request(self, s, f, ref):
        # Apply a request once and answer ACK (with its result) or NACK (with the reason).
        try:
            body = P.parse_payload(f.type, f.payload)
            ftype, result = R.apply(self, s, f.type, body)
        except P.ProtoError as e:
            if e.reason == P.R_UNKNOWN_COMMAND and f.type not in P.TYPE_NAMES:
                self.counters[P.C_UNKNOWN] += 1
            ftype, result = P.NACK, (e.reason, str(e))
        except (ValueError, KeyError, TypeError) as e:
            ftype, result = P.NACK, (P.R_OUT_OF_RANGE, _msg(e))
        except Exception as e:  # noqa: BLE001 - the host gets the reason, the node runs on
            ftype, result = P.NACK, (P.R_INTERNAL, _msg(e))
        if ftype == P.NACK:
            self._reply(s, f, P.NACK, P.nack(ref, result[0], result[1]))
        else:
            self.counters[P.C_APPLIED] += 1
            self._reply(s, f, P.ACK, P.ack(ref, result))

    def _authentic(self, port, addr, f):
        # The session (of this port and address) whose EPOCH the frame's tag checks under,
        # newest first (a host re-opening its session has two for a moment), or None.
        c = self.counters
        if (self.key is None) == bool(f.auth):
            c[P.C_BAD_TAG if f.auth or self.key is not None else P.C_BAD_FRAME] += 1
            return None
        found = False
        i = len(self.sessions)
        while i:
            i -= 1
            s = self.sessions[i]
            if s.port is port and s.addr == addr:
                found = True
                if (f.check(self.key, s.epoch, 0) if self.key is not None else f.check()):
                    return s
        if not found:
            c[P.C_STALE] += 1            # no session here (the node rebooted?): HELLO again
        else:
            c[P.C_BAD_TAG if self.key is not None else P.C_BAD_FRAME] += 1
        return None

    def _watch_tunes(self):
        # An autotune a host started over the protocol lasts only while that host has a
        # session here (a new session of the same place carries it on): a lost host (its
        # session ends after _SESSION_IDLE_MS of silence) or a BYE stops it, and the loop
        # goes back to its previous gains and output.
        for lp in self.loops:
            o = lp.tune_owner
            if o is None or lp.tuner is None:
                continue
            for s in self.sessions:
                if s.port is o[0] and s.addr == o[1]:
                    break
            else:
                self.node.abort_tune(lp.name, "the host that started it went away")

    def _inherit(self, s):
        # s (not yet authenticated) has a frame that checks under its EPOCH: its host is
        # the one of the older session(s) of this place, which said HELLO again (a break
        # on the line, a lost answer). Host SEQs run on across sessions, so the older
        # session's window and answers carry over: a request retried in the new session
        # is answered, not applied again. (Answers are sealed anew, under the new EPOCH.)
        for o in self.sessions:
            if o is not s and o.port is s.port and o.addr == s.addr:
                for v in o.seen:
                    if s.fresh(v):
                        s.accept(v)
                for r in o.recent:
                    s.recent.append([r[0], None, r[2], r[3]])
        while len(s.recent) > _RECENT:
            s.recent.pop(0)

    def _retire(self, s):
        # s has just been authenticated: older sessions of the same place are over (the
        # host went on in s: the port is not told a session ended).
        for o in self.sessions[:]:
            if o is not s and o.port is s.port and o.addr == s.addr:
                self._drop(o)

    def _drop(self, s):
        self.sessions.remove(s)
        self.update_period()

    def _reply(self, s, f, ftype, payload):
        frame = self.send(s, ftype, payload)
        s.recent.append([f.seq, frame, ftype, payload])
        if len(s.recent) > _RECENT:
            s.recent.pop(0)

    def _session(self, port, addr):
        # The newest session of this port and address (serial: addr None).
        i = len(self.sessions)
        while i:
            i -= 1
            s = self.sessions[i]
            if s.port is port and s.addr == addr:
                return s
        return None

    def _hello(self, port, addr, f):
        # Anyone may ask (discovery): HELLO_REQ needs no key; the answer is authenticated.
        # So that a flood of them costs little and displaces nobody: answers are rate-
        # limited, never larger than the request, and a new session takes the place of one
        # no host has authenticated, or of one whose host has gone quiet; an authenticated
        # session of the same place stays until the new one is authenticated.
        c = self.counters
        if f.auth or not f.check():      # HELLO_REQ is a plain frame (no session yet)
            c[P.C_BAD_FRAME] += 1
            return
        try:
            nonce = P.parse_hello_req(f.payload)["nonce"]
        except P.ProtoError:
            c[P.C_BAD_FRAME] += 1
            return
        now = time.ticks_ms()
        if not self._hello_token(now):
            c[P.C_DROPPED] += 1
            return
        for o in self.sessions[:]:
            if o.port is port and o.addr == addr and not o.authed:
                self._drop(o)            # this place's earlier unanswered HELLO
        if len(self.sessions) >= _MAX_SESSIONS and not self._make_room(now):
            c[P.C_DROPPED] += 1          # every session busy with a live host
            return
        s = Session(port, addr, nonce)
        p = self._hello_payload(s)
        if P.HDR_SHORT + len(p) + P.TAG_LEN > len(f.data):
            c[P.C_BAD_FRAME] += 1        # an unpadded request: no amplifier for anyone
            return
        self.sessions.append(s)
        self.send(s, P.HELLO, p)

    def _hello_token(self, now):
        gone = time.ticks_diff(now, self._hello_refill)
        if gone >= 1000 // _HELLO_PER_S:
            k = gone * _HELLO_PER_S // 1000
            self._hello_tokens = min(_HELLO_PER_S, self._hello_tokens + k)
            self._hello_refill = time.ticks_add(self._hello_refill, k * 1000 // _HELLO_PER_S)
            if self._hello_tokens == _HELLO_PER_S:
                self._hello_refill = now
        if self._hello_tokens <= 0:
            return False
        self._hello_tokens -= 1
        return True

    def _make_room(self, now):
        # The oldest session no host has authenticated; else the one quiet the longest,
        # if quiet for _TAKEOVER_MS. False: no room.
        for o in self.sessions:
            if not o.authed:
                self.end(o)
                return True
        q = max(self.sessions, key=lambda o: time.ticks_diff(now, o.heard))
        if time.ticks_diff(now, q.heard) > _TAKEOVER_MS:
            self.end(q)
            return True
        return False

    def announcement(self):
        """A HELLO nobody asked for (zero nonce), under the node's announce EPOCH: it
        tells who is there; a host still asks (HELLO_REQ) before it trusts a session."""
        a = self._announce
        if a is None:
            a = self._announce = Session(None, None, bytes(P.NONCE_LEN))
        return self._seal(a, P.HELLO, self._hello_payload(a))

    def _hello_payload(self, s):
        b = self.node.board
        uid = b.unique_id() if hasattr(b, "unique_id") else b""
        return P.hello(s.epoch, s.nonce, s.roc, self.caps, uid, [lp.name for lp in self.loops],
                       self.name, getattr(b, "name", "?"), self.firmware,
                       self.node.comms_timeout_ms or 0, self.signal_names)

    def update_period(self):
        # One sampling schedule for every subscriber: the fastest asked for.
        ps = [s for s in self.sessions if s.period_ms]
        if not ps:
            self._period = 0
            return
        best = min(ps, key=lambda s: s.period_ms)
        if best.period_ms != self._period or best.batch != self._batch:
            self._period = best.period_ms
            self._batch = best.batch
            self._k = 0
            self._ready_len = 0
            self._next = time.ticks_ms()

    def counters_dict(self):
        return {k: self.counters[i] for i, k in enumerate(P.COUNTERS)}


def _msg(e):
    return str(e) or type(e).__name__
