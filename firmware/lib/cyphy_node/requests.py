# What a host's requests do on the node (docs/protocol.md, "Commands" and "READ"): SET, CLEAR,
# SUBSCRIBE, REBOOT, a config patch, TIME, READ. comms.Endpoint checks a request (a fresh,
# authentic frame of a session) and calls apply(); the answer goes back through it. Runs in
# the node's service (soft context), so it may allocate and write flash.
import time

from . import proto as P


def apply(ep, s, ftype, body):
    """What a host's request (COMMAND, TIME, READ) does: (P.ACK, result bytes), or
    P.ProtoError / ValueError / KeyError / TypeError with the reason for a NACK."""
    if ftype == P.COMMAND:
        return _command(ep, s, body)
    if ftype == P.TIME:
        now = time.ticks_ms()
        ep.node.log.clock_set(body["host_ms"], now)   # the one place the node keeps it
        r = bytearray(4)
        P.put_u32(r, 0, now)
        return P.ACK, bytes(r)
    if ftype == P.READ:
        return P.ACK, _read_chunk(ep, s, body["path"], body["offset"])
    raise P.ProtoError("%s is not a request" % P.TYPE_NAMES.get(ftype, ftype),
                       P.R_UNKNOWN_COMMAND)


def _read_chunk(ep, s, path, offset):
    # A long answer comes in pieces, all cut from the text this session's first piece
    # was cut from (another host's reads never mix in).
    if offset == 0 or s.read is None or s.read[0] != path:
        import json
        text = json.dumps(_read(ep, path)).encode()
        if len(text) > 0xFFFF:
            raise P.ProtoError("%s is too large to read (%d bytes)" % (path, len(text)),
                               P.R_STATE)
        s.read = (path, text)
    text = s.read[1]
    if offset > len(text):
        raise P.ProtoError("offset %d is past the end (%d)" % (offset, len(text)),
                           P.R_OUT_OF_RANGE)
    r = bytearray(2)
    P.put_u16(r, 0, len(text))
    return bytes(r) + text[offset:offset + P.READ_CHUNK]


def _read(ep, path):
    n = ep.node
    if path == "state":
        return n.state()
    if path == "stats":
        return n.stats()
    if path == "faults":
        return n.faults()
    if path == "info":
        b = n.board
        return {"name": ep.name, "node_id": ep.node_id, "firmware": ep.firmware,
                "board": getattr(b, "name", "?"), "mcu": getattr(b, "mcu", "?"),
                "loops": [lp.name for lp in ep.loops], "counters": ep.counters_dict(),
                "uptime_ms": time.ticks_ms(), "comms_errors": n.comms_errors,
                "net": ep.net.info() if ep.net is not None else None,
                "units": {lp.name: {"measurement": lp.inp.units, "output": lp.act.units}
                          for lp in ep.loops}}
    if path.endswith(".tune"):
        try:
            return n.tune_status(path[:-5])
        except KeyError:
            pass
    try:
        return n.get(path)
    except KeyError:
        raise P.ProtoError("no parameter %s (try a loop name, loop.key, state, stats, "
                           "faults or info)" % path, P.R_UNKNOWN_TARGET)


def _command(ep, s, body):
    c = body["cmd"]
    n = ep.node
    if c == P.CMD_SET or c == P.CMD_SET_SAVE:
        # Every assignment is checked before any is applied, and node.set_many applies
        # them in one soft call: a control pass sees all of them or none.
        items = []
        for li, ki, v in body["sets"]:
            if not 0 <= li < ep.nloops:
                raise P.ProtoError("no loop %d (the node has %d)" % (li, ep.nloops),
                                   P.R_UNKNOWN_TARGET)
            if ki >= len(P.KEYS):
                raise P.ProtoError("no key %d" % ki, P.R_UNKNOWN_TARGET)
            lp = ep.loops[li]
            key = P.KEYS[ki]
            if key == "mode":
                v = "auto" if v else "manual"
            elif key in ("kp", "ki", "kd") and lp.pid is None:
                raise P.ProtoError("%s is an on/off loop: it has no %s (nothing was applied)"
                                   % (lp.name, key), P.R_UNKNOWN_TARGET)
            items.append((lp.name + "." + key, v))
        n.set_many(items, c == P.CMD_SET_SAVE)
        return P.ACK, b""
    if c == P.CMD_SET_PARAM:
        try:
            n.set_param(body["name"], body["value"])
        except KeyError:
            raise P.ProtoError("no parameter %s (a block's name.parameter)" % body["name"],
                               P.R_UNKNOWN_TARGET)
        return P.ACK, b""
    if c == P.CMD_CLEAR:
        n.clear()
        return P.ACK, b""
    if c == P.CMD_SUBSCRIBE:
        period = body["period_ms"]
        fastest = min([lp.period_us for lp in ep.loops] or [1000000]) // 1000
        if period and period < max(1, fastest):
            period = max(1, fastest)     # no faster than the fastest loop
        batch = body["batch"]
        if not 1 <= batch <= ep.max_batch or 4 + batch * ep.sample_bytes + 5 + P.TAG_LEN > P.MAX_FRAME:
            raise P.ProtoError("batch %d does not fit a frame" % batch, P.R_OUT_OF_RANGE)
        s.period_ms = period
        s.batch = batch
        s.stats_ms = body["stats_s"] * 1000
        s.next_stats = time.ticks_add(time.ticks_ms(), s.stats_ms)
        ep.update_period()
        r = bytearray(2)
        P.put_u16(r, 0, period)
        return P.ACK, bytes(r)
    if c == P.CMD_REBOOT:
        n.reboot_after(body["delay_ms"])
        return P.ACK, b""
    if c == P.CMD_CONFIG:
        return P.ACK, _patch_config(ep, body["patch"])
    if c == P.CMD_TUNE:
        if not 0 <= body["loop"] < ep.nloops:
            raise P.ProtoError("no loop %d (the node has %d)" % (body["loop"], ep.nloops),
                               P.R_UNKNOWN_TARGET)
        name = ep.loops[body["loop"]].name
        op = body["op"]
        if op == P.TUNE_START:
            n.tune(name, body["amplitude"], body["hyst"], P.TUNE_RULES[body["rule"]],
                   body["timeout_s"] or None, bool(body["apply"]), (s.port, s.addr))
        elif op == P.TUNE_ABORT:
            n.abort_tune(name, "stopped by the host")
        else:
            n.forget_tuning(name)
        return P.ACK, b""
    raise P.ProtoError("unknown command %d" % c, P.R_UNKNOWN_COMMAND)


def _patch_config(ep, text):
    import json
    from .config import validate, ConfigError

    try:
        patch = json.loads(text)
    except ValueError:
        raise P.ProtoError("config patch is not JSON", P.R_MALFORMED)
    if not isinstance(patch, dict):
        raise P.ProtoError("config patch must be a JSON object", P.R_MALFORMED)
    path = getattr(ep.node, "config_path", "/config.json")
    with open(path) as f:
        cfg = json.load(f)
    _merge(cfg, patch)
    try:
        validate(cfg)
    except ConfigError as e:
        raise P.ProtoError(str(e), P.R_OUT_OF_RANGE)
    from .store import write_atomic
    from .cfgview import compile_text, COMPILED
    text = json.dumps(cfg)
    write_atomic(path, text)         # a reset keeps the old or the new file
    write_atomic(COMPILED, compile_text(text.encode(), validate(cfg)))
    return b"applied at the next boot"


def _merge(dst, patch):
    # RFC 7386 JSON merge patch: null deletes, objects merge, anything else replaces
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
