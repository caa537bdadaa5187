# The node's config as the host compiled it. `cyphy provision` (and flash, and a config
# patch) validate /config.json on the host and write /config.node.json next to it:
#   {"source_sha256": <hex SHA-256 of /config.json's bytes>, "config": <the validated
#    config with every default filled in>[, "force": true: provisioned with --force, so a
#    config that does not fit the board's RAM runs what fits (app.py)]}
# The node then never loads the validator (cyphy_node/config.py, ~22 KB of heap on a 32-bit
# MicroPython that a .mpy's interned names keep for good): it checks that the compiled file
# belongs to the /config.json it has and reads it into plain attribute objects. A
# /config.json edited on the node (the hash differs) is validated by config.py as before.
import json

COMPILED = "/config.node.json"
_PLAIN = ("noise", "initial", "disturbances", "params", "actuators")


class View:
    """A compiled config section: its fields are attributes (cfg.loops[0].controller.kp)."""

    def __init__(self, d):
        for k in d:
            # a user block's params and actuators stay plain dicts (config.Section's too)
            setattr(self, k, d[k] if k in _PLAIN else _view(d[k]))

    def get(self, key, default=None):
        return getattr(self, key, default)


def _view(v):
    if isinstance(v, dict):
        return View(v)
    if isinstance(v, list):
        return [_view(x) for x in v]
    return v


def load(path="/config.json", compiled=COMPILED):
    """The compiled config if it belongs to path's current bytes, else None."""
    import hashlib
    import binascii

    try:
        with open(path, "rb") as f:
            h = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()
        with open(compiled) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(c, dict) or c.get("source_sha256") != h or not isinstance(c.get("config"), dict):
        return None
    v = View(c["config"])
    v.fit_forced = c.get("force") is True     # `cyphy provision --force`: run what fits
    return v


def compile_text(source, cfg, force=False):
    """The compiled file's text for the bytes of /config.json and its validated Config;
    force: provisioned with --force (a config that does not fit the RAM runs what fits)."""
    import hashlib
    import binascii

    d = {"source_sha256": binascii.hexlify(hashlib.sha256(source).digest()).decode(),
         "config": cfg.to_dict()}
    if force:
        d["force"] = True
    return json.dumps(d)
