# Keeps an ESP32 station connected without ever blocking: call poll() from the main loop
# (every 10-100 ms is plenty). Written against MicroPython's ESP32 network.WLAN
# (ports/esp32/network_wlan.c), where connect() only starts the driver, which then
# retries by itself forever, and status() reports the last disconnect reason:
#   STAT_NO_AP_FOUND (201), STAT_WRONG_PASSWORD (202, also for CONNECTION_FAIL 205),
#   STAT_IDLE after disconnect() (and still right after a new connect()),
#   STAT_CONNECTING while requested (also for reasons it does not name, e.g. 15, 200).
# A wrong password first shows as CONNECTING (reason 15) and only later as 202, so
# nothing here treats one status reading as final: an attempt ends when it connects,
# when status() names a failure, or after attempt_ms. Then the keeper stops the driver
# (disconnect()), waits (back-off from backoff_ms, doubling up to backoff_max_ms) and
# tries again. A link that drops (isconnected() turns False) counts in `drops`; the
# driver is already reconnecting, so the keeper watches that attempt like its own.
#
#   keeper = WifiKeeper(network.WLAN(network.STA_IF), ssid, password)
#   keeper.poll()                       # in the loop; returns True while connected
#   keeper.state                        # "connecting", "connected", "wrong password",
#                                       # "no access point", "timeout", "link lost", "off"
#   keeper.connects, keeper.drops, keeper.attempts, keeper.failures, keeper.backoff_ms
#   keeper.info()                       # all that as a dict (never the password)
#
# Cost per poll(): a few WLAN calls (isconnected, status), no allocation but the state
# strings, which are constants. The first poll() turns the radio on (active(True)), which
# on an ESP32 waits for the driver to start (tens of ms): do it once at boot, before the
# control loop runs (keeper.poll() there, or keeper.start()).
import time

CONNECTING = "connecting"
CONNECTED = "connected"
WRONG_PASSWORD = "wrong password"
NO_AP = "no access point"
TIMEOUT = "timeout"
LINK_LOST = "link lost"
OFF = "off"


class WifiKeeper:
    def __init__(self, wlan, ssid, password, backoff_ms=1000, backoff_max_ms=30000, attempt_ms=15000):
        import network

        self.wlan = wlan
        self._ssid = ssid
        self._key = password
        self.backoff_min_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.attempt_ms = attempt_ms
        self.backoff_ms = backoff_ms  # the next wait after a failure
        self.state = OFF
        self.reason = None  # why the last attempt failed, or the link was lost
        self.connects = 0  # times connected (the first one included)
        self.drops = 0  # times a connected link was lost
        self.attempts = 0  # connect() calls made (the driver's own retries not counted)
        self.failures = 0  # attempts given up
        self._since = 0  # ticks_ms when the current attempt (or wait) began
        self._wait = 0  # ms to wait before the next attempt (state is a failure)
        self._started = False
        self._no_ap = getattr(network, "STAT_NO_AP_FOUND", 201)
        self._wrong = getattr(network, "STAT_WRONG_PASSWORD", 202)

    def __repr__(self):
        return "<WifiKeeper %s: %s>" % (self._ssid, self.state)  # never the password

    def start(self, now_ms=None):
        """Turn the radio on and start the first attempt (poll() does it if needed)."""
        now = time.ticks_ms() if now_ms is None else now_ms
        if not self.wlan.active():
            self.wlan.active(True)
        self._started = True
        self._connect(now)

    def stop(self):
        """Leave the network and stay off until start()."""
        self._started = False
        self.state = OFF
        try:
            self.wlan.disconnect()
        except OSError:
            pass

    def _connect(self, now):
        self.attempts += 1
        self.state = CONNECTING
        self._since = now
        self.wlan.connect(self._ssid, self._key)

    def _fail(self, why, now):
        self.failures += 1
        self.reason = why
        self.state = why
        try:
            self.wlan.disconnect()  # stop the driver's own retries: the back-off is ours
        except OSError:
            pass
        self._since = now
        self._wait = self.backoff_ms
        self.backoff_ms = min(self.backoff_ms * 2, self.backoff_max_ms)

    def poll(self, now_ms=None):
        """Move the keeper along; True while connected. Never waits."""
        now = time.ticks_ms() if now_ms is None else now_ms
        if not self._started:
            if self.state == OFF and self.attempts == 0:
                self.start(now)
            return False
        w = self.wlan
        st = self.state
        if st == CONNECTED:
            if w.isconnected():
                return True
            self.drops += 1  # the driver reconnects by itself: watch that attempt
            self.reason = LINK_LOST
            self.state = CONNECTING
            self._since = now
            return False
        if st == CONNECTING:
            if w.isconnected():
                self.state = CONNECTED
                self.reason = None
                self.connects += 1
                self.backoff_ms = self.backoff_min_ms
                return True
            s = w.status()
            if s == self._wrong:
                self._fail(WRONG_PASSWORD, now)
            elif s == self._no_ap:
                self._fail(NO_AP, now)
            elif time.ticks_diff(now, self._since) >= self.attempt_ms:
                self._fail(TIMEOUT if self.reason != LINK_LOST else LINK_LOST, now)
            return False
        # waiting after a failure
        if time.ticks_diff(now, self._since) >= self._wait:
            self._connect(now)
        return False

    def retry_in_ms(self, now_ms=None):
        """ms until the next attempt while waiting after a failure; 0 otherwise."""
        if self.state in (CONNECTING, CONNECTED, OFF):
            return 0
        now = time.ticks_ms() if now_ms is None else now_ms
        return max(0, self._wait - time.ticks_diff(now, self._since))

    def ip(self):
        return self.wlan.ifconfig()[0] if self.state == CONNECTED else None

    def info(self):
        return {"ssid": self._ssid, "state": self.state, "reason": self.reason, "ip": self.ip(),
                "connects": self.connects, "drops": self.drops, "attempts": self.attempts,
                "failures": self.failures, "backoff_ms": self.backoff_ms}
