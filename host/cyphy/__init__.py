"""cyphy: flash, provision, debug and test ESP32 MicroPython control nodes, real or simulated."""

__version__ = "0.1.0"


def connect(url: str, key=None, key_file=None, timeout: float = 2.0, unprovisioned: bool = False):
    """cyphy.connect("serial:///dev/ttyUSB0" | "udp://host[:port]" | "sim://NAME"): a Node
    (see cyphy.api). Imported lazily so that `import cyphy` stays light."""
    from .api import connect as _connect

    return _connect(url, key, key_file, timeout, unprovisioned)
