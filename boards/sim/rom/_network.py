# The sim board's `network` module: MicroPython's ESP32 network.WLAN, with the host's
# loopback as the "Wi-Fi".
#
# There is one access point, always in range: connect() to any SSID succeeds at once and
# the station gets the node's own address (node.json "ip", passed as ip=... on the
# command line; 127.0.0.1 without one). Other nodes and host programs reach it there,
# and broadcasts to 127.255.255.255 reach every node (boards/sim/board.py, udp()).
# Two names reproduce the failures an ESP32 reports, for tests:
#   ssid "cyphy-sim-noap"   -> status() STAT_NO_AP_FOUND (201)
#   key "wrong-password"    -> status() STAT_WRONG_PASSWORD (202)
# Constants, return values and errors follow MicroPython's ESP32 port
# (ports/esp32/network_wlan.c, v1.22 and later): status() reports the failure reason
# while ESP32 would keep retrying in the background; connect() and disconnect() on an
# inactive interface raise OSError("Wifi Not Started").
# Not modelled: connection delays, dropped links, scan(), a soft-AP that stations can
# join, static IP configuration, power management.
# Wi-Fi state lives in the node process, so it starts over at every reset, soft ones
# included (an ESP32 keeps its connection across a soft reset).
# Small on purpose: the ROM shares the node's heap (about 5 KB for this module).

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
_NONE = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

_board = None  # the ROM's Board: .uid (the MAC), .ip (the station's address)
_hostname = ["mpy-esp32"]  # MicroPython's default on ESP32
# Per interface (STA_IF, AP_IF): active, connected (with an address), requested
# (connect() called, not undone), reason (last disconnect reason, 0: none), ssid, key.
_state = ({"active": False, "connected": False, "requested": False, "reason": 0, "ssid": "", "key": ""},
          {"active": False})


def _started():
    if not _state[STA_IF]["active"]:
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
        st = _state[self._if]
        if is_active is not None:
            if not is_active and self._if == STA_IF and st["active"]:
                if st["connected"] or st["requested"]:
                    st["reason"] = _LEAVE
                st["connected"] = False
            st["active"] = bool(is_active)
        return st["active"]

    def connect(self, ssid=None, key=None, bssid=None):
        st = _state[STA_IF]  # always the station, as on ESP32
        if ssid is not None:
            st["ssid"] = str(ssid, "utf-8") if isinstance(ssid, bytes) else ssid
        if key is not None:
            st["key"] = str(key, "utf-8") if isinstance(key, bytes) else key
        _started()
        st["requested"] = True
        st["connected"] = False
        if st["ssid"] == NOAP_SSID:
            st["reason"] = STAT_NO_AP_FOUND
        elif st["key"] == WRONG_KEY:
            st["reason"] = STAT_WRONG_PASSWORD
        else:
            st["connected"] = True
            st["reason"] = 0

    def disconnect(self):
        _started()
        st = _state[STA_IF]
        st["requested"] = st["connected"] = False
        st["reason"] = _LEAVE

    def isconnected(self):
        # A soft-AP counts as connected once a station joins it: none can here.
        return self._if == STA_IF and _state[STA_IF]["connected"]

    def status(self, param=None):
        if self._if != STA_IF:
            return None
        st = _state[STA_IF]
        if param == "rssi":
            if not st["connected"]:
                raise OSError("Wifi Not Connected")
            return -40
        if param is not None:
            raise ValueError("unknown status param")
        r = st["reason"]
        if st["connected"]:
            return STAT_GOT_IP
        if r == STAT_NO_AP_FOUND or r == STAT_WRONG_PASSWORD:
            return r
        if st["requested"] and r != _LEAVE:
            return STAT_CONNECTING
        return r if r and r != _LEAVE else STAT_IDLE

    def ifconfig(self, config=None):
        if config is not None:
            raise OSError("cyphy-sim: the node's address is fixed (node.json)")
        if self._if == AP_IF:  # ESP32's soft-AP default
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0") if _state[AP_IF]["active"] else _NONE
        if _state[STA_IF]["connected"]:
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
            return _state[STA_IF]["ssid"] if self._if == STA_IF else ""
        raise ValueError("unknown config param")


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name


def make(board, Module):
    """The `network` module of this node."""
    global _board
    _board = board
    g = globals()
    return Module("network", WLAN=WLAN, hostname=hostname,
                  **{k: g[k] for k in g if k.startswith("STA") or k.endswith("_IF")})
