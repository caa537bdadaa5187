# The node application: what boot.py runs at every reset, soft resets included (boot.py
# stays a few lines of source because the node compiles it at boot; this module ships
# compiled, as .mpy).
#
# Loads /config.json, builds the board (/lib/board.py: boards/esp32/board.py or
# boards/sim/board.py deployed under that name) and starts the node's loops in the
# background; `node` is then available in the REPL:
#     node.state(), node.set("oven.setpoint", 60.0), node.stats(), node.faults(), node.stop()
# An invalid config leaves every output untouched (at its reset state), prints the message
# naming the bad field, keeps it in /config_error.txt and returns: the REPL stays usable.
# So does a config that does not fit the board's RAM (what `cyphy check` calls fitting:
# every part started and a free block of MARGIN bytes left after boot), except that its
# outputs are at their fail-safe values; provisioned with --force, the node runs what fits.
ERROR_FILE = "/config_error.txt"
SECRETS_FILE = "/secrets.json"
MARGIN = 32768  # the free block a running node needs (frames, patches, REPL); cyphy.check's too
REFUSED = "cyphy: config does not fit this board's RAM:"  # how a refusal begins (cyphy.check reads it)


def _keep_error(msg):
    from .store import write_atomic
    try:
        write_atomic(ERROR_FILE, msg + "\n")
    except OSError:
        pass


def _boot():
    # Memory goes to the loops and their safety (fail-safe outputs, watchdog) first, then
    # comms, then conveniences: the control modules are imported and the loops built first;
    # comms and the rest come after them, each in its own try, and a part that could not
    # start is named (node.dropped) and printed. (A late import can fail for want of a
    # contiguous block for MicroPython's name table even with memory free: that drops
    # comms, never the loops.) Then the node checks that it fits (_short): if not, it
    # refuses the config (_refuse), unless it was provisioned with --force, when it runs
    # what started, in that order.
    from . import node  # noqa: F401
    import board  # noqa: F401
    from .cfgview import load as load_compiled
    cfg = load_compiled("/config.json")    # compiled and validated on the host
    if cfg is None:
        cfg = _validate_here()
        if cfg is None:
            return None
    try:
        import os
        os.remove(ERROR_FILE)
    except OSError:
        pass
    import gc
    from board import Board
    from .node import Node
    gc.collect()  # the node's buffers want contiguous heap
    b = Board()
    try:
        n = Node(cfg, b)            # every output at its fail-safe value first
    except ValueError as e:          # a pin the board cannot do, a gain out of range...
        msg = "cyphy: config error: %s" % (e,)
        print(msg)
        _keep_error(msg)
        return None
    except MemoryError:
        n = None
        gc.collect()
        _refuse("its loops did not fit in the %d bytes free" % gc.mem_free())
        return None
    # The loops are built before comms, so memory goes to them first; they start once the
    # rest is built and the node knows it fits, or at once if it was provisioned with
    # --force (it runs what fits: the loops first, whatever comms finds then).
    forced = getattr(cfg, "fit_forced", False)
    if forced:
        _run(n, cfg)
    s = _secrets()
    starved = []                    # parts dropped for want of memory
    try:
        _endpoint(n, cfg, s)
    except MemoryError:
        _drop(n, "comms", "not enough memory", ("cyphy_node.comms", "cyphy_node.proto"))
        starved.append("comms")
    except Exception as e:  # the loops run on without a protocol endpoint
        _drop(n, "comms", repr(e), ())
    if cfg.comms.udp and n.comms is not None:
        try:
            _wifi(n, cfg, b, s)
        except MemoryError:
            _drop(n, "wifi", "not enough memory", ("cyphy_node.net", "cyphy_node.peer"))
            starved.append("wifi")
        except Exception as e:  # the serial protocol runs on
            _drop(n, "wifi", repr(e), ())
    short = _short(starved)
    if forced:
        if short is not None:
            print("cyphy: does not fit this board's RAM: %s; provisioned with --force: running "
                  "what fits" % short)
        return n
    if short is not None:
        if n.comms is not None and n.comms.net is not None:
            n.comms.net.keeper.stop()
        n.comms = None
        _refuse(short)
        return None
    _run(n, cfg)
    return n


def _run(n, cfg):
    n.start()
    print("cyphy: node %s running %d loop(s); `node` in the REPL" % (cfg.name, len(n.loops)))


def _short(starved):
    # What `cyphy check` calls not fitting, as the node can see it: a part dropped for want
    # of memory, or no free block of MARGIN bytes once the boot's garbage is collected (an
    # ESP32 without PSRAM grows its heap from the IDF's here if it can: that is its room).
    import gc
    why = ["%s dropped (not enough memory)" % p for p in starved]
    gc.collect()
    try:
        probe = bytearray(MARGIN)
        del probe
    except MemoryError:
        why.append("no free block of %d bytes after boot" % MARGIN)
    gc.collect()
    if not why:
        return None
    return "%s (%d bytes free)" % (", ".join(why), gc.mem_free())


def _refuse(short):
    # A config that does not fit runs nothing: said at boot and kept, as a config error is
    msg = ("%s %s; nothing started, every output at its fail-safe value. Make the config "
           "smaller (`cyphy check CONFIG` says what each part costs) or provision it with "
           "--force to run what fits" % (REFUSED, short))
    print(msg)
    _keep_error(msg)


def _validate_here():
    # /config.json without its compiled form (edited on the node, or written by hand):
    # validate it here, which costs the validator's RAM; `cyphy provision` compiles it.
    import os
    try:
        os.stat("/config.json")
        print("cyphy: /config.json is not compiled (edited on the node?): validating it here "
              "costs RAM; cyphy provision compiles it on the host")
    except OSError:
        pass
    from . import config
    try:
        return config.load("/config.json")
    except config.ConfigError as e:
        msg = "cyphy: config error: %s" % (e,)
        print(msg)
        _keep_error(msg)
        return None
    finally:
        del config
        _forget("cyphy_node.config")  # ~22 KB on a 32-bit MicroPython, needed only here


def _drop(n, part, why, modules):
    # A part that could not start: say so, keep its name, free what it left behind.
    import gc
    if part == "comms":
        n.comms = None
    elif n.comms is not None:
        n.comms.net = None
    for m in modules:
        _forget(m)
    gc.collect()
    n.dropped.append(part)
    print("cyphy: %s dropped (%s, %d bytes free); the loops and their safety run" % (part, why, gc.mem_free()))


def _forget(name):
    import sys
    import gc
    sys.modules.pop(name, None)
    pkg, _, mod = name.rpartition(".")
    p = sys.modules.get(pkg)
    try:
        delattr(p, mod)
    except (AttributeError, TypeError, KeyError):  # not there (MicroPython: KeyError)
        pass
    gc.collect()


def _secrets():
    # /secrets.json (written by `cyphy provision`): {"key": hex, "wifi": {"ssid", "password"}}.
    # Never printed: only whether each part is there.
    import json
    try:
        with open(SECRETS_FILE) as f:
            s = json.load(f)
        return s if isinstance(s, dict) else {}
    except (OSError, ValueError):
        return {}


def _endpoint(n, cfg, s):
    """The protocol endpoint (docs/protocol.md) on the serial console."""
    import gc
    gc.collect()
    from . import VERSION, proto
    from .comms import Endpoint
    key = None
    if s.get("key"):
        try:
            key = proto.key_from_hex(s["key"])
        except ValueError as e:
            print("cyphy: %s: the key is unusable (%s); provision the node again" % (SECRETS_FILE, e))
    if key is None:
        print("cyphy: no key: the protocol runs without authentication (provision a key)")
    n.attach(Endpoint(n, key, cfg.node_id, cfg.name, VERSION))


def _wifi(n, cfg, b, s):
    """UDP over Wi-Fi (comms.udp). Never waits: the keeper connects (and reconnects after a
    drop) in the background, and the UDP port opens once the link is up (net.py)."""
    w = s.get("wifi") or {}
    if not w.get("ssid"):
        print("cyphy: comms.udp is on but no Wi-Fi credentials were provisioned")
        return
    from .net import Net
    keeper = b.wifi_keeper(w["ssid"], w.get("password", ""))
    keeper.start()
    n.comms.net = Net(n.comms, b, keeper, cfg.comms.udp_port, cfg.comms.follow or (),
                      s.get("peer_keys") or {})
    print("cyphy: Wi-Fi: joining %s; UDP port %d opens once connected" % (w["ssid"], cfg.comms.udp_port))


_node = None


def boot():
    """Build and start the node from /config.json; returns it, or None (config error).
    boot.py calls it on every boot; a second call (an older main.py) returns the same
    node."""
    global _node
    if _node is not None:
        return _node
    _node = _boot()
    return _node
