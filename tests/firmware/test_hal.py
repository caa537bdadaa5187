"""The board HAL (boards/hal.py, boards/esp32, boards/sim/board.py) on real MicroPython.

1. On the Unix port, with a tiny fake `machine` (and `network`) injected through
   sys.modules that records every call: the ESP32 board issues the machine calls
   MicroPython's ESP32 docs prescribe (attenuation, PWM freq/duty, WDT timeout clamping,
   soft Timer callbacks) and validates pins per variant.
2. End to end on a sim node wired to the thermal plant, in virtual time: the HAL reads the
   sensor, drives the heater, the plant answers, periodic callbacks keep time, the
   watchdog resets a hung loop, and channel IO allocates nothing.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from serial_console import Console  # noqa: E402

# ---------------------------------------------------------------- 1. fake machine

FAKE = r'''
import sys, json
sys.path.insert(0, %r)
CALLS = []

class _Mod:
    pass

class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    PULL_DOWN = 1
    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.v = value or 0
        if mode != -1:
            CALLS.append(["Pin", id, mode, pull, value])
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v

class ADC:
    ATTN_0DB = 10  # not 0..3: the board must use the names, not assume values
    ATTN_2_5DB = 11
    ATTN_6DB = 12
    ATTN_11DB = 13
    def __init__(self, pin, **kw):
        CALLS.append(["ADC", pin.id, kw])
    def read_uv(self):
        return 1234000
    def read_u16(self):
        return 4321

class PWM:
    def __init__(self, pin, **kw):
        self.pin = pin.id
        CALLS.append(["PWM", pin.id, kw])
    def duty_u16(self, d):
        self.d = d

class DAC:
    def __init__(self, pin):
        CALLS.append(["DAC", pin.id])
    def write(self, v):
        self.v = v

class WDT:
    def __init__(self, id=0, timeout=5000):
        CALLS.append(["WDT", timeout])
        self.fed = 0
    def feed(self):
        self.fed += 1

class Timer:
    PERIODIC = 1
    ONE_SHOT = 0
    live = {}
    def __init__(self, id):
        self.id = id
    def init(self, **kw):
        self.cb = kw.pop("callback")
        CALLS.append(["Timer.init", self.id, kw])
        Timer.live[self.id] = self
    def deinit(self):
        CALLS.append(["Timer.deinit", self.id])
        Timer.live.pop(self.id, None)

machine = _Mod()
for _k, _v in (("Pin", Pin), ("ADC", ADC), ("PWM", PWM), ("DAC", DAC), ("WDT", WDT), ("Timer", Timer)):
    setattr(machine, _k, _v)
machine.unique_id = lambda: b"\x24\x0a\xc4\x01\x02\x03"
sys.modules["machine"] = machine

# os.uname().machine names the chip, as MicroPython's ESP32 port does; Board() reads it
import os as _real_os
class _Os:
    MACHINE = "Generic ESP32 module with ESP32"
    def uname(self):
        m = _Mod()
        m.machine = _Os.MACHINE
        return m
    def __getattr__(self, name):
        return getattr(_real_os, name)
sys.modules["os"] = _Os()

# network: "good" joins after three polls, "bad" is a wrong password, anything else never
network = _Mod()
network.STA_IF = 0
network.STAT_IDLE = 1000
network.STAT_CONNECTING = 1001
network.STAT_GOT_IP = 1010
network.STAT_WRONG_PASSWORD = 202
network.STAT_NO_AP_FOUND = 201

class WLAN:
    def __init__(self, iface):
        CALLS.append(["WLAN", iface])
        self.on = False
        self.key = None
        self.polls = 0
    def active(self, v=None):
        if v is None:
            return self.on
        self.on = v
    def connect(self, ssid, key):
        CALLS.append(["connect", ssid])
        self.key = key
    def disconnect(self):
        CALLS.append(["disconnect"])
        self.key = None
    def isconnected(self):
        if self.key == "good":
            self.polls += 1
            return self.polls > 3
        return False
    def status(self):
        if self.key == "bad":
            return network.STAT_WRONG_PASSWORD
        if self.key is None:
            return network.STAT_IDLE
        return network.STAT_NO_AP_FOUND if self.key == "noap" else network.STAT_CONNECTING
    def ifconfig(self):
        return ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")

network.WLAN = WLAN
sys.modules["network"] = network

from boards import hal
from boards.esp32.board import Board, detect

def err(f, *a, **kw):
    try:
        f(*a, **kw)
    except ValueError as e:
        return str(e)
    return None

def last(kind):
    return [c for c in CALLS if c[0] == kind][-1]
''' % str(REPO)


def run(mpy, body: str):
    """Run body after the fake prelude; body prints one JSON document."""
    return json.loads(mpy(FAKE + body).strip().splitlines()[-1])


def test_adc_attenuation_is_the_smallest_that_covers_the_range(mpy):
    r = run(mpy, (
        "out = []\n"
        "for variant, mv in (('devkitc', 900), ('devkitc', 1000), ('devkitc', 1750), ('devkitc', None),\n"
        "                    ('s3', 3000), ('c3', 1100), ('c3', 2500)):\n"
        "    a = Board(variant).analog_in({'devkitc': 34, 's3': 1, 'c3': 0}[variant], mv)\n"
        "    out.append([variant, mv, last('ADC')[2]['atten'], a.range_mv, a.read_uv(), a.read_u16()])\n"
        "out.append(err(Board('c3').analog_in, 0, 2600))\n"
        "out.append(err(Board('devkitc').analog_in, 34, 3300))\n"
        "print(json.dumps(out))\n"
    ))
    # ESP32 docs: 0/2.5/6/11 dB cover 950/1250/1750/2450 mV; S3 11 dB to 3100; C3 to 2500
    assert r[:7] == [
        ["devkitc", 900, 10, 950, 1234000, 4321],
        ["devkitc", 1000, 11, 1250, 1234000, 4321],
        ["devkitc", 1750, 12, 1750, 1234000, 4321],
        ["devkitc", None, 13, 2450, 1234000, 4321],
        ["s3", 3000, 13, 3100, 1234000, 4321],
        ["c3", 1100, 12, 1300, 1234000, 4321],
        ["c3", 2500, 13, 2500, 1234000, 4321],
    ]
    assert "at most 2500 mV" in r[7] and "divider" in r[7]
    assert "at most 2450 mV" in r[8]


def test_pwm_is_ledc_with_freq_and_duty_u16(mpy):
    r = run(mpy, (
        "b = Board()\n"
        "p = b.pwm_out(25, freq_hz=20000)\n"
        "out = [last('PWM')]\n"
        "for num, den in ((1, 4), (4, 4), (5, 4), (-1, 4), (500, 1000), (16383, 16384)):\n"
        "    p.write(num, den)\n"
        "    out.append(p._pwm.d)\n"
        "p.duty_u16(1234)\n"
        "out += [p._pwm.d, p.freq_hz]\n"
        "out.append(err(p.write, 1, 16385))\n"
        "out.append(err(b.pwm_out, 26, 0))\n"
        "out.append(err(b.pwm_out, 26, 1000, 70000))\n"
        "c3 = Board('c3')\n"
        "for pin in range(6):\n"
        "    c3.pwm_out(pin, 1000 * (1 + pin % 4))\n"
        "out.append(err(c3.pwm_out, 7, 1000))\n"
        "c3 = Board('c3')\n"
        "for pin in range(4):\n"
        "    c3.pwm_out(pin, 1000 + pin)\n"
        "out.append(err(c3.pwm_out, 4, 5000))\n"
        "c3.pwm_out(4, 1000)  # a frequency already running shares its LEDC timer\n"
        "print(json.dumps(out))\n"
    ))
    assert r[0] == ["PWM", 25, {"freq": 20000, "duty_u16": 0}]
    assert r[1:7] == [16383, 65535, 65535, 0, 32767, 65531]
    assert r[7:9] == [1234, 20000]
    assert "den must be 1..16384" in r[9]
    assert "1 Hz to 40 MHz" in r[10]
    assert "duty_u16" in r[11]
    assert "only 6 PWM channels" in r[12]
    assert "only 4 different PWM frequencies" in r[13]


def test_watchdog_timeout_is_clamped_up_to_whole_seconds(mpy):
    r = run(mpy, (
        "out = []\n"
        "for ms in (1, 200, 999, 1000, 1001, 1500, 5000):\n"
        "    w = Board().watchdog(ms)\n"
        "    out.append([ms, last('WDT')[1], w.timeout_ms])\n"
        "b = Board()\n"
        "w = b.watchdog(300)\n"
        "w.feed(); w.feed()\n"
        "out.append([b.watchdog(1000) is w, w._wdt.fed, len([c for c in CALLS if c[0] == 'WDT'])])\n"
        "out.append(err(b.watchdog, 3000))\n"
        "out.append(err(b.watchdog, 0))\n"
        "print(json.dumps(out))\n"
    ))
    # the ESP32 quick reference: "1s is the minimum"; whole seconds on every port version
    assert r[:7] == [[1, 1000, 1000], [200, 1000, 1000], [999, 1000, 1000], [1000, 1000, 1000],
                     [1001, 2000, 2000], [1500, 2000, 2000], [5000, 5000, 5000]]
    assert r[7] == [True, 2, 8]  # asking again for the same timeout gives the running one
    assert "already runs with 1000 ms" in r[8] and "cannot be changed or stopped" in r[8]
    assert "positive" in r[9]


def test_periodic_is_a_soft_machine_timer_on_a_free_id(mpy):
    r = run(mpy, (
        "b = Board()\n"
        "got = []\n"
        "h0 = b.periodic(10_000, got.append)\n"
        "h1 = b.periodic(1000, got.append)\n"
        "h2 = b.periodic(1250, got.append)\n"
        "out = [c for c in CALLS if c[0] == 'Timer.init']\n"
        "Timer.live[0].cb(Timer.live[0]); Timer.live[0].cb(Timer.live[0]); Timer.live[1].cb(Timer.live[1])\n"
        "out.append([h0.count, h1.count, got[0] is h0, got[2] is h1, h0.period_us])\n"
        "h0.stop(); h0.stop()\n"
        "out.append(last('Timer.deinit'))\n"
        "h3 = b.periodic(2000, got.append)\n"
        "out.append(last('Timer.init'))\n"
        "b.periodic(5000, got.append)\n"
        "out.append(err(b.periodic, 5000, got.append))\n"
        "out.append(err(b.periodic, 500, got.append))\n"
        "out.append(err(b.periodic, 1500, got.append))\n"
        "c3 = Board('c3')\n"
        "c3.periodic(1000, got.append); c3.periodic(1000, got.append)\n"
        "out.append(err(c3.periodic, 1000, got.append))\n"
        "print(json.dumps(out))\n"
    ))
    # never hard=True (ESP32 refuses it); period= in ms, or freq= for exact integer rates
    assert r[:3] == [["Timer.init", 0, {"mode": 1, "period": 10}],
                     ["Timer.init", 1, {"mode": 1, "period": 1}],
                     ["Timer.init", 2, {"mode": 1, "freq": 800}]]
    assert r[3] == [2, 1, True, True, 10_000]
    assert r[4] == ["Timer.deinit", 0]  # stop() frees the timer (once)...
    assert r[5] == ["Timer.init", 0, {"mode": 1, "period": 2}]  # ...for the next periodic()
    assert "all 4 timers of ESP32 are in use" in r[6]
    assert "at most 1 kHz" in r[7]
    assert "whole ms or an integer rate" in r[8]
    assert "all 2 timers of ESP32-C3 are in use" in r[9]


# (variant, call, pin, words the ValueError must contain)
PIN_RULES = [
    ("devkitc", "analog_in", 5, ["pin 5", "it can be: din, dout, pwm", "adc pins: 2, 4, 12"]),
    ("devkitc", "analog_in", 0, ["pin 0", "BOOT"]),
    ("devkitc", "digital_out", 34, ["pin 34", "input only", "it can be: din, adc"]),
    ("devkitc", "pwm_out", 36, ["pin 36", "input only"]),
    ("devkitc", "pwm_out", 7, ["pin 7", "it cannot be used", "SPI flash"]),
    ("devkitc", "digital_in", 1, ["pin 1", "REPL console"]),
    ("devkitc", "digital_in", 20, ["pin 20", "no such GPIO"]),
    ("devkitc", "analog_in", 37, ["pin 37", "no such GPIO"]),
    ("devkitc", "dac_out", 4, ["pin 4", "dac pins: 25, 26"]),
    ("s3", "dac_out", 17, ["pin 17", "dac pins: none on this board"]),
    ("s3", "analog_in", 11, None),
    ("s3", "analog_in", 21, ["pin 21", "adc pins: 1, 2, 3"]),
    ("s3", "digital_out", 20, ["USB D+"]),
    ("s3", "pwm_out", 35, ["octal PSRAM"]),
    ("s3", "pwm_out", 46, None),
    ("c3", "analog_in", 4, None),
    ("c3", "analog_in", 5, ["pin 5", "errata", "adc pins: 0, 1, 2, 3, 4"]),
    ("c3", "pwm_out", 14, ["SPI flash"]),
    ("c3", "digital_out", 21, ["UART0 TX"]),
    ("c3", "dac_out", 0, ["none on this board"]),
    ("devkitc", "analog_in", "34", ["GPIO number (int)"]),
]


def test_pins_are_validated_per_variant(mpy):
    calls = "\n".join(f"out.append(err(Board({v!r}).{f}, {p!r}))" for v, f, p, _ in PIN_RULES)
    r = run(mpy, "out = []\n" + calls + "\nprint(json.dumps(out))\n")
    for (variant, f, pin, words), msg in zip(PIN_RULES, r):
        if words is None:
            assert msg is None, (variant, f, pin, msg)
        else:
            assert msg is not None, f"{variant}.{f}({pin}) was accepted"
            for w in words:
                assert w in msg, (variant, f, pin, msg)


def test_pull_resistors_digital_io_and_dac(mpy):
    r = run(mpy, (
        "b = Board()\n"
        "i = b.digital_in(4, 'up'); out = [last('Pin')]\n"
        "b.digital_in(5, 'down'); out.append(last('Pin'))\n"
        "b.digital_in(34); out.append(last('Pin'))\n"
        "out.append(err(b.digital_in, 34, 'up'))\n"
        "out.append(err(b.digital_in, 4, 'sideways'))\n"
        "o = b.digital_out(27, 1); out.append(last('Pin'))\n"
        "seq = []\n"
        "for num, den in ((0, 1), (1, 1), (499, 1000), (500, 1000), (0, 2)):\n"
        "    o.write(num, den); seq.append(o._pin.v)\n"
        "out.append(seq)\n"
        "d = b.dac_out(25); out.append(last('DAC'))\n"
        "seq = []\n"
        "for num, den in ((1, 2), (2, 1), (-5, 7)):\n"
        "    d.write(num, den); seq.append(d._dac.v)\n"
        "d.write_u8(7); seq.append(d._dac.v)\n"
        "out.append(seq)\n"
        "print(json.dumps(out))\n"
    ))
    assert r[0] == ["Pin", 4, 1, 2, None]
    assert r[1] == ["Pin", 5, 1, 1, None]
    assert r[2] == ["Pin", 34, 1, None, None]
    assert "no internal pull resistors" in r[3]
    assert "pull must be" in r[4]
    assert r[5] == ["Pin", 27, 3, -1, 1]
    assert r[6] == [0, 1, 0, 1, 0]
    assert r[7] == ["DAC", 25]
    assert r[8] == [127, 255, 0, 7]


def test_wifi_station_and_the_adc2_rule(mpy):
    r = run(mpy, (
        "out = []\n"
        "b = Board()\n"
        "b.analog_in(4)\n"
        "out.append(err(b.wifi_connect, 'lab', 'good'))\n"
        "b = Board()\n"
        "out.append([b.wifi_status(), b.wifi_ip(), 'adc' in b.caps(4)])\n"
        "out.append([b.wifi_connect('lab', 'good', 2000), b.wifi_status(), b.wifi_ip(), last('WLAN')])\n"
        "out.append([err(b.analog_in, 13), 'adc' in b.caps(4), 'adc' in b.caps(34)])\n"
        "b.analog_in(34)\n"
        "b = Board()\n"
        "out.append([b.wifi_connect('lab', 'bad', 2000), b.wifi_status(), last('disconnect')])\n"
        "b = Board()\n"
        "out.append([b.wifi_connect('lab', 'noap', 120), b.wifi_status(), b.wifi_ip()])\n"
        "print(json.dumps(out))\n"
    ))
    assert "Wi-Fi needs ADC2" in r[0] and "pins 4" in r[0] and "ADC1 pins 32" in r[0]
    assert r[1] == ["off", None, True]
    assert r[2] == [True, "connected", "192.168.4.2", ["WLAN", 0]]
    assert "pin 13" in r[3][0] and "Wi-Fi is active (it is now)" in r[3][0]
    assert r[3][1:] == [False, True]
    assert r[4] == [False, "wrong_password", ["disconnect"]]  # gives up at once, stops retrying
    assert r[5] == [False, "no_ap_found", None]  # after its timeout


# A fake socket module for the ESP32 Datagram: records calls; recvfrom() pops a queue
# (EAGAIN when empty) and sendto() raises what FAIL holds.
FAKE_SOCKET = r"""
socket = _Mod()
socket.AF_INET = 2
socket.SOCK_DGRAM = 2
socket.SOL_SOCKET = 4095
socket.SO_REUSEADDR = 4
socket.SO_BROADCAST = 32
QUEUE = []
FAIL = []

class _Sock:
    def __init__(self, af, kind):
        CALLS.append(["socket", af, kind])
    def setsockopt(self, level, opt, v):
        CALLS.append(["setsockopt", level, opt, v])
    def bind(self, addr):
        CALLS.append(["bind", addr])
    def setblocking(self, flag):
        CALLS.append(["setblocking", flag])
    def recvfrom(self, n):
        if not QUEUE:
            raise OSError(11)
        data, addr = QUEUE.pop(0)
        return data[:n], addr
    def sendto(self, data, addr):
        if FAIL:
            raise OSError(FAIL.pop(0))
        CALLS.append(["sendto", bytes(data), addr])
        return len(data)
    def close(self):
        CALLS.append(["close"])

socket.socket = _Sock
sys.modules["socket"] = socket
"""


def test_udp_datagram_on_esp32_sockets(mpy):
    r = run(mpy, FAKE_SOCKET + (
        "out = []\n"
        "def err(f, *a):\n"
        "    try:\n        f(*a)\n    except (OSError, ValueError) as e:\n        return str(e)\n"
        "b = Board()\n"
        "out.append(err(b.udp, 5477))\n"
        "b.wifi_connect('lab', 'good', 2000)\n"
        "del CALLS[:]\n"
        "d = b.udp(5477)\n"
        "out.append([d.local, CALLS[:]])\n"
        "buf = bytearray(8)\n"
        "out.append(d.recv_into(buf))\n"
        "QUEUE.append((b'hello', ('192.168.4.7', 4000)))\n"
        "QUEUE.append((b'0123456789', ('192.168.4.8', 4001)))\n"
        "out.append([d.recv_into(buf), bytes(buf[:5])])\n"
        "out.append([d.recv_into(buf), bytes(buf), d.recv_into(buf)])\n"
        "out.append([d.sendto(b'pong', ('192.168.4.7', 4000)), d.broadcast(b'hi', 5477), last('sendto')])\n"
        "FAIL.extend([110, 12, 11, 113])\n"
        "out.append([d.sendto(b'x', ('192.168.4.7', 4000)) for _ in range(4)])\n"
        "FAIL.append(9)\n"
        "out.append([err(d.sendto, b'x', ('10.0.0.1', 1)), err(b.udp, 5477), err(b.udp, 70000)])\n"
        "d.close(); d.close()\n"
        "out.append([len([c for c in CALLS if c[0] == 'close']), b.udp(5477).local])\n"
        "print(json.dumps(out))\n"
    ))
    assert "Wi-Fi is not connected" in r[0] and "'off'" in r[0] and "wifi_connect" in r[0]
    assert r[1] == [["192.168.4.2", 5477], [
        ["socket", 2, 2], ["setsockopt", 4095, 4, 1], ["setsockopt", 4095, 32, 1],
        ["bind", ["0.0.0.0", 5477]], ["setblocking", False]]]
    assert r[2] is None  # EAGAIN: nothing waiting
    assert r[3] == [[5, ["192.168.4.7", 4000]], "hello"]
    assert r[4] == [[8, ["192.168.4.8", 4001]], "01234567", None]  # truncated to the buffer
    assert r[5] == [True, True, ["sendto", "hi", ["255.255.255.255", 5477]]]
    # ETIMEDOUT (ESP32's would-block), ENOMEM, EAGAIN, EHOSTUNREACH (Wi-Fi down): dropped
    assert r[6] == [False, False, False, False]
    assert "EBADF" in r[7][0] and "already open" in r[7][1] and "1..65535" in r[7][2]
    assert r[8] == [1, ["192.168.4.2", 5477]]


def test_detect_picks_the_variant_from_uname(mpy):
    r = run(mpy, (
        "out = [[detect(m).variant, detect(m).name] for m in (\n"
        "    'Generic ESP32 module with ESP32', 'ESP32S3 module with ESP32S3',\n"
        "    'Generic ESP32C3 module with ESP32C3')]\n"
        "out.append(err(detect, 'ESP32S2 module with ESP32S2'))\n"
        "out.append(err(Board, 'uno'))\n"
        "b = Board('s3')\n"
        "out.append([b.mcu, b.unique_id() == machine.unique_id(), b.pins('dac'), b.pins('adc')[:3]])\n"
        "print(json.dumps(out))\n"
    ))
    assert r[:3] == [["devkitc", "ESP32-DevKitC"], ["s3", "ESP32-S3-DevKitC-1"], ["c3", "ESP32-C3-DevKitM-1"]]
    assert "ESP32S2" in r[3]
    assert "unknown ESP32 board variant 'uno'" in r[4]
    assert r[5] == ["ESP32-S3", True, [], [1, 2, 3]]


def test_the_interface_only_declares(mpy):
    r = run(mpy, (
        "out = []\n"
        "b = hal.Board()\n"
        "for name, args in (('analog_in', (1,)), ('pwm_out', (1,)), ('periodic', (1000, print)),\n"
        "                   ('watchdog', (1000,)), ('ticks_us', ()), ('wifi_connect', ('a', 'b')),\n"
        "                   ('udp', (5477,))):\n"
        "    try:\n"
        "        getattr(b, name)(*args)\n"
        "        out.append(name)\n"
        "    except NotImplementedError:\n"
        "        pass\n"
        "out.append(b.virtual_time())\n"
        "print(json.dumps(out))\n"
    ))
    assert r == [False]


def test_channel_io_allocates_nothing(mpy):
    out = mpy(FAKE + (
        "import micropython\n"
        "b = Board()\n"
        "a = b.analog_in(34); i = b.digital_in(4); o = b.digital_out(27)\n"
        "p = b.pwm_out(25); d = b.dac_out(26); w = b.watchdog(2000)\n"
        "h = b.periodic(1000, lambda h: None)\n"
        "fire = Timer.live[0].cb  # what machine.Timer calls: Periodic._fire, bound at setup\n"
        "def loop(n):\n"
        "    acc = 0\n"
        "    t0 = b.ticks_us()\n"
        "    for k in range(n):\n"
        "        acc += a.read_uv() + a.read_u16() + i.read()\n"
        "        p.write(k, 1000); p.duty_u16(k); o.write(k & 1); d.write(k, 1000); d.write_u8(k & 255)\n"
        "        w.feed(); fire(None)\n"
        "        acc += b.ticks_diff(b.ticks_add(b.ticks_us(), 10), t0) & 1\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    loop(1000)\n"
        "finally:\n"
        "    micropython.heap_unlock()\n"
        "print(h.count, w._wdt.fed)\n"
    ))
    assert out.split() == ["1000", "1000"]


# ---------------------------------------------------------------- 2. on a sim node

# The fotd plant's defaults are the figures used below (gain 0.9 degC/%, tau 160 s, dead
# time 12 s, ambient 20 degC; docs/plants.md) and an adc pin's default volts are
# [0, 2.45]; pin 35 adds a digital "over 50 degC" input.
THERMAL = {
    "plant": {"type": "fotd"},
    "wiring": [
        {"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150]},
        {"pin": 35, "kind": "din", "signal": "temperature", "threshold": 50},
        {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]},
    ],
    "seed": 1,
}
HAL_FILES = [("boards/hal.py", "lib/boards/hal.py"),
             ("boards/esp32/board.py", "lib/boards/esp32/board.py"),
             ("boards/esp32/pins.py", "lib/boards/esp32/pins.py"),
             ("boards/esp32/chip_esp32.py", "lib/boards/esp32/chip_esp32.py"),
             ("boards/esp32/chip_esp32s3.py", "lib/boards/esp32/chip_esp32s3.py"),
             ("boards/esp32/chip_esp32c3.py", "lib/boards/esp32/chip_esp32c3.py"),
             ("boards/sim/board.py", "lib/boards/sim/board.py")]
SETUP = "from boards.esp32.board import detect\nb = detect()\n"
UV_PER_DEGC = 2_450_000 / 150


def install_hal(con: Console) -> None:
    """Copy the HAL to the node's /lib through the raw REPL (mpremote fs cp does the
    same, at a second per node)."""
    con.run("import os\nfor d in ('/lib', '/lib/boards', '/lib/boards/esp32', '/lib/boards/sim'):\n"
                 "    try:\n        os.mkdir(d)\n    except OSError:\n        pass\n")
    for src, dst in HAL_FILES:
        data = (REPO / src).read_bytes()
        for i in range(0, len(data), 2048):  # small pieces: the raw REPL buffers each one
            mode = "ab" if i else "wb"
            con.run(f"with open({'/' + dst!r}, {mode!r}) as f:\n    f.write({data[i:i + 2048]!r})\n")
    # Import once, on a freshly collected heap, as firmware does at boot: compiling the
    # sources needs contiguous blocks, and a bench node's plant shares the node's heap.
    con.run("import gc\ngc.collect()\nfrom boards.esp32.board import detect\ndetect()\n")




@pytest.fixture
def oven(sim_nodes):
    """A sim node on virtual time wired to the thermal plant, with the HAL installed."""
    node = sim_nodes("oven", virtual_time=True, bench=THERMAL)
    with Console(node.port) as con:
        con.raw()
        install_hal(con)
        yield con


def test_sim_board_is_an_esp32_devkitc_on_virtual_time(oven):
    out = oven.run(SETUP + (
        "import json, machine\n"
        "assert detect() is b\n"
        "print(json.dumps([b.name, b.variant, b.mcu, b.virtual_time(), b.unique_id() == machine.unique_id(),\n"
        "    b.wifi_status(), b.wifi_ip(), b.caps(34), b.caps(25)]))\n"
        "print(json.dumps([b.wifi_connect('any', 'thing'), b.caps(34), b.caps(25)]))\n"
    ))
    before, after = (json.loads(line) for line in out.splitlines())
    assert before == ["cyphy-sim", "devkitc", "ESP32", True, True, "off", None,
                      ["din", "adc"], ["din", "dout", "pwm", "adc", "dac"]]
    assert after == [True, ["din", "adc"], ["din", "dout", "pwm", "dac"]]  # ADC2 goes with Wi-Fi
    status, ip = oven.run("print(b.wifi_status(), b.wifi_ip())").split()
    assert status == "connected" and ip.startswith("127.") and ip.endswith(".0.1")


def test_sensor_and_heater_through_the_hal_move_the_plant(oven):
    out = oven.run(SETUP + (
        "import time\n"
        "t = b.analog_in(34, max_mv=2450)\n"
        "hot = b.digital_in(35)\n"
        "heater = b.pwm_out(25, freq_hz=1000)\n"
        "before = (t.read_uv(), hot.read())\n"
        "heater.write(1, 2)\n"
        "time.sleep(600)\n"
        "print(before[0], before[1], t.read_uv(), hot.read())\n"
    ))
    uv0, hot0, uv1, hot1 = (int(v) for v in out.split())
    heater = 100 * 32767 / 65535  # write(1, 2) is duty_u16 32767
    expected = 20 + 0.9 * heater * (1 - math.exp(-(600 - 12) / 160))
    assert uv0 / UV_PER_DEGC == pytest.approx(20, abs=0.2)
    assert uv1 / UV_PER_DEGC == pytest.approx(expected, abs=0.3)
    assert (hot0, hot1) == (0, 1)  # the thermostat input crossed its 50 degC threshold


@pytest.fixture
def bare(sim_nodes):
    """A sim node on virtual time without a bench, with the HAL installed."""
    node = sim_nodes("bare", virtual_time=True)
    with Console(node.port) as con:
        con.raw()
        install_hal(con)
        yield con


def test_periodic_runs_n_times_in_t_virtual_seconds(bare):
    out = bare.run(SETUP + (
        "import micropython, time\n"
        "t0 = b.ticks_us()\n"
        "slow = b.periodic(10_000, lambda h: None)\n"
        "fast = b.periodic(1000, lambda h: None)\n"
        "time.sleep(2)\n"
        "fast.stop()\n"
        "time.sleep(1)\n"
        "slow.stop()\n"
        "time.sleep(1)\n"
        "print(slow.count, fast.count, b.ticks_diff(b.ticks_us(), t0))\n"
        "hs = [b.periodic(5000, lambda h: None) for i in range(4)]\n"
        "try:\n"
        "    b.periodic(5000, print)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
        "for h in hs:\n"
        "    h.stop()\n"
        "# the timer -> Periodic -> callback path allocates nothing: 250 calls, heap locked\n"
        "seen = [0]\n"
        "def tick(h):\n"
        "    seen[0] = h.count\n"
        "h = b.periodic(4000, tick)\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    time.sleep(1)\n"
        "finally:\n"
        "    micropython.heap_unlock()\n"
        "print(h.count, seen[0])\n"
    ))
    counts, full, locked = out.splitlines()
    assert counts.split() == ["300", "2000", "4000000"]
    assert "all 4 timers of ESP32 are in use" in full
    assert locked.split() == ["250", "250"]


def test_on_off_control_from_a_periodic_callback_holds_the_setpoint(oven):
    # A thermostat at 5 Hz: the periodic callback reads the sensor and drives the heater.
    out = oven.run(SETUP + (
        "import time\n"
        "t = b.analog_in(34)\n"
        "heater = b.pwm_out(25)\n"
        "SET_UV = 50 * 2_450_000 // 150\n"
        "log = []\n"
        "def tick(h):\n"
        "    heater.write(1 if t.read_uv() < SET_UV else 0, 1)\n"
        "    if h.count % 50 == 0:\n"
        "        log.append(t.read_uv())\n"
        "h = b.periodic(200_000, tick)\n"
        "time.sleep(1800)\n"
        "h.stop()\n"
        "print(h.count, ' '.join([str(v) for v in log]))\n"
    ), timeout=120)
    count, *samples = out.split()
    assert int(count) == 9000
    temps = [int(v) / UV_PER_DEGC for v in samples]
    settled = temps[len(temps) // 2:]  # the last 15 minutes
    assert min(settled) > 45 and max(settled) < 57, settled
    assert sum(settled) / len(settled) == pytest.approx(50, abs=3)


def test_tick_io_allocates_nothing_on_the_sim(oven):
    # Channel IO under heap_lock, in the main loop and inside periodic callbacks. (The
    # sleep itself is outside the lock here: stepping the sim's plant allocates.)
    out = oven.run(SETUP + (
        "import micropython, time\n"
        "a = b.analog_in(34); i = b.digital_in(35); o = b.digital_out(27)\n"
        "p = b.pwm_out(25); d = b.dac_out(26)\n"
        "failed = []\n"
        "def tick(h):\n"
        "    micropython.heap_lock()\n"
        "    try:\n"
        "        p.write(a.read_uv() & 1023, 1000); o.write(i.read()); d.write(h.count & 1023, 1000)\n"
        "        ok = True\n"
        "    except MemoryError:\n"
        "        ok = False\n"
        "    micropython.heap_unlock()\n"
        "    if not ok:\n"
        "        failed.append(h.count)\n"
        "h = b.periodic(1000, tick)\n"
        "time.sleep_ms(100)\n"
        "h.stop()\n"
        "def loop(n):  # a function: binding new globals could grow the globals dict\n"
        "    acc = 0\n"
        "    t0 = b.ticks_us()\n"
        "    for k in range(n):\n"
        "        acc += a.read_uv() + a.read_u16() + i.read()\n"
        "        p.write(k, 2000); p.duty_u16(k); o.write(k & 1); d.write(k, 2000); d.write_u8(k & 255)\n"
        "        acc += b.ticks_diff(b.ticks_add(b.ticks_us(), 10), t0) & 1\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    loop(2000)\n"
        "finally:\n"
        "    micropython.heap_unlock()\n"
        "print(h.count, failed)\n"
    ))
    assert out.strip() == "100 []"


def test_watchdog_resets_a_hung_loop_in_virtual_time(oven):
    # Healthy for 5 virtual seconds, then the loop stops feeding (it hangs waiting on
    # something): reset 1 s later, ESP-IDF task watchdog panic, reset_cause() == WDT_RESET.
    oven.write((SETUP + (
        "import time\n"
        "w = b.watchdog(300)\n"
        "for k in range(50):\n"
        "    w.feed()\n"
        "    time.sleep_ms(100)\n"
        "print('healthy', w.timeout_ms)\n"
        "while True:\n"
        "    time.sleep_ms(100)\n"
    )).encode() + b"\x04")
    oven.read_until(b"healthy 1000", timeout=30)
    oven.read_until(b"task_wdt:  - mpy_machine_wdt", timeout=30)
    oven.raw()
    assert oven.run("import machine\nprint(machine.reset_cause())").strip() == "3"


def test_watchdog_resets_a_busy_hang_in_real_time(sim_nodes):
    # A loop spinning without ever waiting, on a real-time node: the supervisor's
    # watchdog check resets it, as ESP32's task watchdog would.
    node = sim_nodes("spinner")
    with Console(node.port) as con:
        con.raw()
        install_hal(con)
        out = con.run(SETUP + "print(b.virtual_time())\n")
        assert out.strip() == "False"
        hang = SETUP + "w = b.watchdog(1000)\nw.feed()\nprint('spinning')\nwhile True:\n    pass\n"
        con.write(hang.encode() + b"\x04")
        con.read_until(b"spinning", timeout=30)
        con.read_until(b"task_wdt:  - mpy_machine_wdt", timeout=30)
        con.raw()
        assert con.run("import machine\nprint(machine.reset_cause())").strip() == "3"
