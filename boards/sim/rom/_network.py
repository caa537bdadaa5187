# The sim board's `network` module: MicroPython's ESP32 network.WLAN, with the host's
# loopback as the "Wi-Fi", and a `socket` module whose AF_INET sockets carry traffic only
# while that Wi-Fi carries it.
#
# The access point ("the air", set by the test equipment: wifi.ap / wifi.drop /
# wifi.restore on the node's control socket, host/cyphy/sim/equipment.py) is by default
# one that any SSID and key join, except two names kept for tests:
#   ssid "cyphy-sim-noap"   -> no access point found (reason 201)
#   key "wrong-password"    -> a wrong password
# The station gets the node's own address (node.json "ip", 127.1.x.y).
#
# Behaviour follows ports/esp32/network_wlan.c (MicroPython v1.22 and later):
# - connect() starts attempts that run in the background; after every failed attempt the
#   port calls esp_wifi_connect() again (WIFI_EVENT_STA_DISCONNECTED while
#   wifi_sta_connect_requested), forever (config reconnects is accepted, not modelled);
# - status() reports from the last disconnect reason: GOT_IP when connected; 201 after
#   NO_AP_FOUND; 202 after AUTH_FAIL or CONNECTION_FAIL (205); IDLE after ASSOC_LEAVE
#   (8: disconnect(); connect() does not clear it, so right after disconnect() +
#   connect() status() says IDLE until the attempt ends); else CONNECTING while a
#   connection is requested; reasons it does not map (15, 200) read as CONNECTING.
# Timing (microseconds of the node's clock, virtual time included):
#   an attempt that joins: scan finds the AP 0.7 s, auth/assoc/4-way handshake 0.05 s
#     (ESP32 log in micropython PR #4842: STA_START 380 ms, "init -> auth" 1060 ms;
#     "auth -> assoc -> run -> connected" 3610..3660 ms), DHCP 0.5 s (our assumption):
#     GOT_IP 1.25 s after connect();
#   an attempt that fails: 2.4 s (the spacing of successive STA_DISCONNECTED in the same
#     log, 202 at 1070 ms then 201 at 3490 ms, and in micropython issue #11625, reason 15
#     then 205 2.41 s later);
#   a wrong password: the first attempt ends with reason 15 (4WAY_HANDSHAKE_TIMEOUT,
#     which status() reads as CONNECTING), the next ones with 205 (CONNECTION_FAIL,
#     status() 202): STAT_WRONG_PASSWORD shows 4.8 s after connect() (issue #11625);
#   no access point: reason 201 after each 2.4 s scan;
#   the AP vanishing (wifi.drop, mode "beacon"): the station notices only when no beacon
#     came for 6 s (esp_wifi_set_inactive_time: station default 6 s): until then
#     isconnected() is True and every datagram is lost; then reason 200
#     (BEACON_TIMEOUT, read as CONNECTING) and new attempts (201 while the AP is away).
#     Mode "deauth": the AP deauthenticates the station at once (reason 3).
# UDP while the link is down: sendto() raises OSError(EHOSTUNREACH) once the station
# knows it is disconnected (lwIP finds no route on a netif that is down; ESP32's errno
# is newlib's 118, the sim's errno module has Linux's 113: compare with
# errno.EHOSTUNREACH), datagrams sent during a beacon timeout vanish, nothing is
# received, and what arrived while the link was down is discarded when it comes back.
# The node looks at the control socket's Wi-Fi commands whenever it touches Wi-Fi
# (WLAN calls, socket sends and receives, at most every 10 ms) and when it reads its
# console; a drop takes effect at that moment of the node's clock.
# Not modelled: scan(), a soft-AP that stations can join, static IP configuration,
# power management, config(reconnects=N). Wi-Fi state lives in the node process, so
# every reset starts with the radio off, soft resets included (an ESP32 keeps its
# connection across a soft reset); the air belongs to the supervisor and survives resets.
import json
import _flashdev

NOAP_SSID = "cyphy-sim-noap"
WRONG_KEY = "wrong-password"

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
_LEAVE = 8  # ESP-IDF's disconnect reason after disconnect() or active(False)
_AUTH_LEAVE = 3  # the AP deauthenticated us (wifi.drop mode "deauth")
_4WAY = 15  # WIFI_REASON_4WAY_HANDSHAKE_TIMEOUT
_CONN_FAIL = 205  # WIFI_REASON_CONNECTION_FAIL
_NONE = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
JOIN_US = 1_250_000  # scan 0.7 s + association 0.05 s + DHCP 0.5 s
FAIL_US = 2_400_000  # a failed attempt
BEACON_US = 6_000_000  # station inactive time: no beacon for 6 s = disconnected

_board = None  # the ROM's Board: .uid (the MAC), .ip (the station's address), .clock, .link
_hostname = ["mpy-esp32"]  # MicroPython's default on ESP32
# The station: active, connected (with an address), requested (connect() called, not
# undone), reason (last disconnect reason, 0: none), ssid, key, end (clock us when the
# current attempt ends, -1: none), result (that attempt's outcome: 0 joins, else the
# reason), n (attempts since connect()), lost (clock us when a link on a vanished AP is
# declared lost, -1: not yet known).
_sta = {"active": False, "connected": False, "requested": False, "reason": 0, "ssid": "", "key": "",
        "end": -1, "result": 0, "n": 0, "lost": -1}
_ap = {"active": False}
# The air (test equipment): ssid/password None = the default AP; up; drop mode; down_at.
_air = {"ssid": None, "password": None, "up": True, "drop": "beacon", "down_at": 0}
_last_pump = [-1_000_000]
_socks = []  # the node's AF_INET sockets (for discarding what arrived while down)


def _now():
    return _board.clock.now_us()


def _pump():
    """Serve control-socket commands waiting on the link (the air may have changed)."""
    now = _now()
    if now - _last_pump[0] < 10_000:
        return
    _last_pump[0] = now
    link = _board.link
    if len(link._raw) + len(link._q) > 1024:
        return  # console input piles up unread: leave the rest in the pipe
    try:
        if link._poll.poll(0):
            n = link._in.readinto(link._tmp)
            if n:
                link._raw.extend(link._tmpv[:n])
                link._decode()
    except MemoryError:
        pass  # heap locked by user code: next time


def _attempt(t):
    """Start an attempt at clock time t: its outcome and end, from the air now."""
    st = _sta
    a = _air
    ssid_ok = st["ssid"] == a["ssid"] if a["ssid"] is not None else st["ssid"] != NOAP_SSID
    key_ok = st["key"] == a["password"] if a["password"] is not None else st["key"] != WRONG_KEY
    if not a["up"] or not ssid_ok:
        st["result"], dur = STAT_NO_AP_FOUND, FAIL_US
    elif not key_ok:
        st["result"], dur = (_4WAY if st["n"] == 0 else _CONN_FAIL), FAIL_US
    else:
        st["result"], dur = 0, JOIN_US
    st["n"] += 1
    st["end"] = t + dur


def _step():
    """Bring the station up to the node's current time."""
    _pump()
    st = _sta
    now = _now()
    while True:
        if st["connected"]:
            if _air["up"]:
                st["lost"] = -1
                return
            if st["lost"] < 0:
                st["lost"] = _air["down_at"] + (BEACON_US if _air["drop"] == "beacon" else 0)
            if now < st["lost"]:
                return
            st["connected"] = False
            st["reason"] = STAT_BEACON_TIMEOUT if _air["drop"] == "beacon" else _AUTH_LEAVE
            if not st["requested"]:
                return
            st["n"] = 1  # reconnect attempts go on (never the first-attempt reason 15)
            _attempt(st["lost"])
            continue
        if not (st["active"] and st["requested"]) or st["end"] < 0 or now < st["end"]:
            return
        t = st["end"]
        if st["result"] == 0:
            st["connected"] = True
            st["reason"] = 0
            st["end"] = -1
            st["lost"] = -1
            _flush()  # nothing that arrived while down is delivered
            continue
        st["reason"] = st["result"]
        _attempt(t)  # the port reconnects at once, forever


def carrying():
    """0: the link carries traffic; 1: silently lost (beacon timeout pending); 2: down."""
    _step()
    if not _sta["connected"]:
        return 2
    return 0 if _air["up"] else 1


def _flush():
    for s in _socks:
        s._drain()


def _started():
    if not _sta["active"]:
        raise OSError("Wifi Not Started")


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF

    def __init__(self, interface_id=STA_IF):
        # ESP32 returns one object per interface; here objects share their state.
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id

    def active(self, is_active=None):
        st = _sta if self._if == STA_IF else _ap
        if is_active is not None:
            if not is_active and self._if == STA_IF and st["active"]:
                _step()
                if st["connected"] or st["requested"]:
                    st["reason"] = _LEAVE
                st["connected"] = False
                st["end"] = -1
            st["active"] = bool(is_active)
        return st["active"]

    def connect(self, ssid=None, key=None, bssid=None):
        st = _sta  # always the station, as on ESP32
        if ssid is not None:
            st["ssid"] = str(ssid, "utf-8") if isinstance(ssid, bytes) else ssid
        if key is not None:
            st["key"] = str(key, "utf-8") if isinstance(key, bytes) else key
        _started()
        _step()
        st["requested"] = True
        st["connected"] = False  # the reason stays until the next event, as on ESP32
        st["n"] = 0
        _attempt(_now())

    def disconnect(self):
        _started()
        _step()
        st = _sta
        st["requested"] = st["connected"] = False
        st["reason"] = _LEAVE
        st["end"] = -1

    def isconnected(self):
        # A soft-AP counts as connected once a station joins it: none can here.
        if self._if != STA_IF:
            return False
        _step()
        return _sta["connected"]

    def status(self, param=None):
        if self._if != STA_IF:
            return None
        _step()
        st = _sta
        if param == "rssi":
            if not st["connected"]:
                raise OSError("Wifi Not Connected")
            return -40
        if param is not None:
            raise ValueError("unknown status param")
        r = st["reason"]
        if st["connected"]:
            return STAT_GOT_IP
        if r == STAT_NO_AP_FOUND:
            return r
        if r == STAT_WRONG_PASSWORD or r == _CONN_FAIL:
            return STAT_WRONG_PASSWORD
        if r == _LEAVE:
            return STAT_IDLE
        if st["requested"]:
            return STAT_CONNECTING
        return r if r else STAT_IDLE

    def ifconfig(self, config=None):
        if config is not None:
            raise OSError("cyphy-sim: the node's address is fixed (node.json)")
        if self._if == AP_IF:  # ESP32's soft-AP default
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0") if _ap["active"] else _NONE
        if self.isconnected():
            return (_board.ip, "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return _NONE

    def ipconfig(self, key):
        if key != "addr4":
            raise ValueError("unexpected key")
        return self.ifconfig()[:2]

    def config(self, *args, **kw):
        if kw:
            for k in kw:
                if k == "hostname" or k == "dhcp_hostname":
                    _hostname[0] = kw[k]
                elif k not in ("reconnects", "pm", "txpower"):  # accepted, no effect here
                    raise ValueError("unknown config param")
            return None
        k = args[0]
        if k == "mac":  # the base MAC; ESP32's soft-AP uses the base MAC + 1
            uid = _board.uid
            return bytes(uid[:5]) + bytes(((uid[5] + self._if) & 255,))
        if k == "hostname" or k == "dhcp_hostname":
            return _hostname[0]
        if k == "ssid" or k == "essid":
            return _sta["ssid"] if self._if == STA_IF else ""
        raise ValueError("unknown config param")


def _make_socket(Module):
    """The `socket` module: the Unix port's, with AF_INET sockets behind the Wi-Fi link."""
    import io
    import errno
    import socket as _s

    AF_INET = _s.AF_INET
    EAGAIN = errno.EAGAIN
    UNREACH = errno.EHOSTUNREACH
    clock = _board.clock

    class socket(io.IOBase):
        def __init__(self, af=AF_INET, type=_s.SOCK_STREAM, proto=0):
            self._s = _s.socket(af, type, proto)
            self._wifi = af == AF_INET
            self._timeout = None  # None: blocking; 0: non-blocking; else seconds
            if self._wifi:
                if len(_socks) > 32:  # forget closed ones
                    _socks[:] = [x for x in _socks if x._s is not None]
                _socks.append(self)

        def __getattr__(self, name):
            return getattr(self._s, name)

        def __repr__(self):
            return repr(self._s)

        def ioctl(self, req, arg):  # select.poll: the real socket's fd
            return self._s.fileno() if req == 10 else -1

        def setblocking(self, flag):
            self._timeout = None if flag else 0
            self._s.setblocking(flag)

        def settimeout(self, t):
            self._timeout = t
            self._s.settimeout(t)

        def close(self):
            if self._s is not None:
                self._s.close()
            if self in _socks:
                _socks.remove(self)

        def _drain(self):
            s = self._s
            if s is None:
                return
            s.setblocking(False)
            try:
                while True:
                    s.recv(2048)
            except OSError:
                pass
            if self._timeout is None:
                s.setblocking(True)
            else:
                s.settimeout(self._timeout)

        def _gate_out(self):
            c = carrying() if self._wifi else 0
            if c == 2:
                raise OSError(UNREACH)
            return c == 0

        def _gate_in(self):
            if not self._wifi:
                return
            t0 = clock.now_us()
            while carrying():
                self._drain()
                if self._timeout == 0:
                    raise OSError(EAGAIN)
                if self._timeout is not None and clock.now_us() - t0 >= self._timeout * 1_000_000:
                    raise OSError(errno.ETIMEDOUT)
                clock.sleep_us(10_000)

        def sendto(self, data, addr):
            if self._gate_out():
                return self._s.sendto(data, addr)
            return len(data)

        def send(self, data):
            if self._gate_out():
                return self._s.send(data)
            return len(data)

        def sendall(self, data):
            if self._gate_out():
                self._s.sendall(data)

        def recvfrom(self, n):
            self._gate_in()
            return self._s.recvfrom(n)

        def recv(self, n):
            self._gate_in()
            return self._s.recv(n)

    attrs = {k: getattr(_s, k) for k in dir(_s) if not k.startswith("__")}
    attrs["socket"] = socket
    return Module("socket", **attrs)


def configure(cfg):
    """A sim.config request (test equipment): the air and the flash timing."""
    w = cfg.get("wifi")
    if w is not None:
        _step()  # what happened until now happened under the old air
        up = bool(w.get("up", True))
        if _air["up"] and not up:
            _air["down_at"] = _now()
        _air["up"] = up
        _air["ssid"] = w.get("ssid")
        _air["password"] = w.get("password")
        _air["drop"] = "deauth" if w.get("drop") == "deauth" else "beacon"
    if "flash_stall" in cfg:
        _flashdev.STALL = bool(cfg["flash_stall"])


def _hook(prev):
    """link.on_request: sim.* requests here, the rest to the bench (if any)."""
    link = _board.link

    def serve(payload):
        if payload.find(b'"op": "sim.') < 0:
            if prev is not None:
                prev(payload)
            else:
                link.frame(81, b'{"ok": false, "error": "this node has no bench"}')
            return
        rid = None
        try:
            req = json.loads(payload)
            rid = req.get("id")
            configure(req)
            ans = {"ok": True, "id": rid}
        except Exception as e:  # noqa: BLE001 - every request gets an answer
            ans = {"ok": False, "id": rid, "error": str(e)}
        link.frame(81, json.dumps(ans).encode())  # 'Q'

    return serve


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name


def make(board, Module):
    """The `network` module of this node."""
    global _board
    _board = board
    board.link.on_request = _hook(board.link.on_request)
    g = globals()
    return Module("network", WLAN=WLAN, hostname=hostname,
                  **{k: g[k] for k in g if k.startswith("STA") or k.endswith("_IF")})


def make_socket(Module):
    """The `socket` module of this node (after make())."""
    return _make_socket(Module)
