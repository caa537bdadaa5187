"""The chips cyphy runs on, for the host: boards/esp32/chip_<chip>.py (the one description of
each chip and its DevKit) with boards/esp32/pins.py (what they share), the files the node's
HAL and the sim ROM also read, and the chip-aware config check that
`cyphy provision` runs before writing anything (and a later `cyphy check --chip` can reuse).

    from cyphy import chips
    chips.check_config(cfg_dict, "esp32c3")   # ChipConfigError("channels[1].freq_hz: ...")
    chips.chip_of_machine("Generic ESP32S3 module with ESP32S3")   # "esp32s3"

The check is what the node's board would refuse when it builds the config's channels
(boards/esp32/board.py, firmware/lib/cyphy_node/io.py), judged on the host for the target
chip's DevKit pin map: pins and their functions, the DAC (ESP32 only), ADC2 with Wi-Fi,
the ADC's calibrated range at each channel's atten_db, PWM frequencies (S3/C3 have no
REF_TICK: below 10 Hz their LEDC cannot divide its clock), PWM channels and timers.
"""

from __future__ import annotations

from functools import lru_cache

from cyphy.sim.nodes import CHIP_NAMES, chips as _load_chips


class ChipConfigError(ValueError):
    """A config the chip cannot run: .path (the field), .reason; str() is "path: reason"."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@lru_cache(maxsize=1)
def description() -> dict:
    """boards/esp32/pins.py's namespace with every chip loaded (cyphy.sim.nodes.chips()):
    CHIPS, BOARDS, CHIP_BOARD, pwm_error, ..."""
    return _load_chips()


def chip(name: str) -> dict:
    if name not in CHIP_NAMES:
        raise ValueError(f"unknown chip {name!r}; use one of: {', '.join(CHIP_NAMES)}")
    return description()["CHIPS"][name]


def board(name: str) -> dict:
    """The DevKit pin map a node of this chip uses (what the HAL's Board() picks)."""
    d = description()
    return d["BOARDS"][d["CHIP_BOARD"][name]]


def chip_of_machine(machine: str) -> str | None:
    return description()["chip_of_machine"](machine)


def _caps(b: dict, pin: int, wifi: bool) -> list[str]:
    if pin not in b["gpio"] or pin in b["reserved"]:
        return []
    c = ["din"]
    if pin not in b["input_only"]:
        c += ["dout", "pwm"]
    if pin in b["adc1"] or (pin in b["adc2"] and not wifi):
        c.append("adc")
    if pin in b["dac"]:
        c.append("dac")
    return c


# What a device channel's pins must be able to do: kind -> {key naming a pin: capability}
# (a 1-Wire bus, an I2C bus and a chip select drive their pins; a SPI MISO, a UART RX and a
# counter's inputs only read theirs)
DEVICE_PIN = {"ds18b20": {"pin": "dout"}, "tpo": {"pin": "dout"},
              "sht3x": {"sda": "dout", "scl": "dout"},
              "max31855": {"sck": "dout", "miso": "din", "cs": "dout"},
              "counter": {"pin": "din"}, "encoder": {"pin_a": "din", "pin_b": "din"},
              "modbus_in": {"tx": "dout", "rx": "din", "de": "dout"},
              "modbus_out": {"tx": "dout", "rx": "din", "de": "dout"}}


def check_config(cfg: dict, chip_name: str) -> None:
    """Raise ChipConfigError naming the first field of cfg (a config dict, validated by
    cyphy_node.config first) that a node with this chip cannot run."""
    from cyphy_node import config as C

    c = chip(chip_name)
    b = board(chip_name)
    d = description()
    full = C.validate(cfg).to_dict()
    mcu = c["mcu"]
    wifi = bool(full.get("comms", {}).get("udp"))
    pwm_freqs: dict[int, str] = {}
    n_pwm = 0
    for i, ch in enumerate(full["channels"]):
        for role, need in DEVICE_PIN.get(ch["kind"], {"pin": ch["kind"]}).items():
            if ch.get(role) is not None:
                _check_pin(f"channels[{i}]", role, ch[role], ch["kind"], need, b, c, wifi)
        p = f"channels[{i}]"
        kind = ch["kind"]
        if kind in ("modbus_in", "modbus_out") and ch["uart"] >= c.get("uarts", 2 if mcu == "ESP32-C3" else 3):
            raise ChipConfigError(p + ".uart", f"{mcu} has no UART{ch['uart']} (UART0 is the REPL's; "
                                               f"use uart 1)")
        if kind == "din" and ch["pull"] != "none" and ch["pin"] in b["no_pull"]:
            raise ChipConfigError(p + ".pull", f"GPIO{ch['pin']} on {mcu} has no internal pull resistors")
        if kind == "adc":
            a = d["atten_index"](ch["atten_db"])
            lo, hi = c["adc_range_mv"][a]
            s = ch["scale"]
            for e in ch["valid"]:
                mv = s["mv_min"] + (e - s["eng_min"]) * (s["mv_max"] - s["mv_min"]) / (s["eng_max"] - s["eng_min"])
                if not lo - 0.0005 <= mv <= hi + 0.0005:
                    raise ChipConfigError(
                        p + ".valid",
                        f"{ch['valid']} {ch['units']} is {_mv(s, ch['valid'][0]):.1f}..{_mv(s, ch['valid'][1]):.1f} mV "
                        f"at the pin, but {mcu} at {ch['atten_db']} dB measures {lo}..{hi} mV calibrated: "
                        f"narrow valid to within [{_eng(s, lo):.4g}, {_eng(s, hi):.4g}], or change atten_db")
        if kind == "pwm":
            why = d["pwm_error"](chip_name, ch["freq_hz"])
            if why is not None:
                raise ChipConfigError(p + ".freq_hz", f"{why}; {mcu} PWM runs from {d['pwm_min_hz'](chip_name)} Hz")
            n_pwm += 1
            if n_pwm > c["pwm_channels"]:
                raise ChipConfigError(p, f"{mcu} has {c['pwm_channels']} PWM channels, this is one more")
            pwm_freqs.setdefault(ch["freq_hz"], p)
            if len(pwm_freqs) > c["pwm_timers"]:
                raise ChipConfigError(p + ".freq_hz", f"{mcu} runs at most {c['pwm_timers']} different PWM "
                                                     f"frequencies at once: {sorted(pwm_freqs)} Hz")


def _check_pin(p: str, role: str, pin: int, kind: str, need: str, b: dict, c: dict,
               wifi: bool) -> None:
    """ChipConfigError on p.role unless pin can be `need` (a kind: adc, din, dout, ...)."""
    caps = _caps(b, pin, wifi)
    if need in caps:
        return
    mcu = c["mcu"]
    if pin not in b["gpio"]:
        why = f"{mcu} ({b['name']}) has no GPIO{pin}"
    elif pin in b["reserved"]:
        why = f"GPIO{pin} on {b['name']} is reserved for {b['reserved'][pin]}"
    elif need == "dac" and not c["dac"]:
        why = f"{mcu} has no DAC (ESP32 only: GPIO25, GPIO26)"
    elif need == "adc" and pin in b["adc2"] and wifi:
        why = (f"GPIO{pin} is ADC2, which the Wi-Fi driver owns while comms.udp is on; "
               f"ADC1 pins: {', '.join(map(str, b['adc1']))}")
    else:
        ok = [q for q in b["gpio"] if need in _caps(b, q, wifi)]
        why = (f"GPIO{pin} on {mcu} cannot be {need} (it can be: {', '.join(caps) or 'nothing'}); "
               f"{need} pins: {', '.join(map(str, ok)) or 'none'}")
    if need != kind:
        why = f"a {kind} channel's {role} needs {need}: {why}"
    raise ChipConfigError(f"{p}.{role}", why)


def _mv(s: dict, e: float) -> float:
    return s["mv_min"] + (e - s["eng_min"]) * (s["mv_max"] - s["mv_min"]) / (s["eng_max"] - s["eng_min"])


def _eng(s: dict, mv: float) -> float:
    return s["eng_min"] + (mv - s["mv_min"]) * (s["eng_max"] - s["eng_min"]) / (s["mv_max"] - s["mv_min"])
