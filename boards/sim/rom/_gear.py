# The sim board's test equipment, node side: requests from the supervisor's control socket
# (host/cyphy/sim/equipment.py) that read or disturb the bench's plant, served at the
# node's own (possibly virtual) time.
#
# A request arrives as a 'P' command on the link (_link.py) while the node reads its
# input or, in real time, sleeps; the answer goes back as a 'Q' frame. Both are JSON
# objects; the answer carries the request's "id". Requests:
#   {"op": "plant.state"}
#   {"op": "plant.set", "input": NAME, "value": V [, "at_s": T]}      a load or unwired input
#   {"op": "plant.set", "param": NAME, "value": V [, "at_s": T]}      a live parameter
#   {"op": "plant.sensor", "sensor": NAME, "fault": "stuck"|"noise"|"offset"|"none",
#    ["value": V] ["std": S] [, "at_s": T]}
#   {"op": "plant.clear"}                                            every sensor healthy
# Every answer but an error is the plant's state (state() below).
#
# Loaded only on a board with a bench, whose plant has heap of its own on top of the
# node's (supervisor.py, BENCH_HEAP): a board without one pays nothing for this.
import json
from time import sleep_us as _sleep_us

_MAX_ANSWER = 4000  # one frame, one atomic pipe write (_link.py)
# the answer when the heap cannot take one (no id: the supervisor takes it for the oldest
# request it is waiting on)
_NOMEM = b'\x00Q\x31\x00{"ok": false, "error": "the node is out of heap"}'
_PRE = "plant spec 'disturbance"


class Gear:
    def __init__(self, link, bench):
        self.link = link
        self.bench = bench

    def answer(self, payload):
        """Serve one request payload; writes the 'Q' answer (never raises but Ctrl-C)."""
        rid = None
        try:
            try:
                req = json.loads(payload)
                rid = req.get("id")
                ans = self.request(req)
                ans["ok"] = True
            except KeyboardInterrupt:
                self.reply({"id": rid, "ok": False, "error": "interrupted by Ctrl-C"})
                raise
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - any bad request gets an answer
                ans = {"ok": False, "error": str(e) or type(e).__name__}
            ans["id"] = rid
            self.reply(ans)
        except MemoryError:
            self.link._out.write(_NOMEM)  # preallocated: needs no heap

    def reply(self, ans):
        data = json.dumps(ans).encode()
        if len(data) > _MAX_ANSWER:
            data = json.dumps({"id": ans.get("id"), "ok": False, "error": "answer too large"}).encode()
        self.link.frame(81, data)  # 'Q'

    def wait_us(self, us):
        """The clock's real-time sleeps (_clock.py): sleep about us microseconds, serving
        requests that arrive meanwhile. Console input read on the way is queued for later,
        up to a point: beyond it the input stays in the pipe."""
        link = self.link
        if us < 2000 or len(link._raw) + len(link._q) > 1024:
            _sleep_us(us)
            return
        try:
            ready = link._poll.poll((us - 1000) // 1000)
        except MemoryError:
            return  # user code holds the heap locked: poll() waited, then could not answer
        if ready:
            n = link._in.readinto(link._tmp)
            if n:
                link._raw.extend(link._tmpv[:n])
                link._decode()
            elif n == 0:
                _sleep_us(us)  # supervisor gone: poll() would not wait any more

    def request(self, req):
        """A plant.* request at the node's current time; returns the answer dict."""
        b = self.bench
        if not b.clock._busy:
            b.advance()  # the plant catches up with the node's clock first
        op = req.get("op")
        if op == "plant.state":
            return self.state()
        ev = {}
        for k in req:
            if k != "op" and k != "id":
                ev[k] = req[k]
        try:
            self._change(op, ev)
        except ValueError as e:
            # the plant's messages name the key as in a spec file: name it as in the request
            m = str(e)
            if m.startswith(_PRE):
                m = ("'" if m[len(_PRE)] == "." else "request'") + m[len(_PRE) + 1 :]
            raise ValueError(m)
        return self.state()

    def _change(self, op, ev):
        b = self.bench
        p = b.plant
        if op == "plant.set":
            if "input" not in ev and "param" not in ev:
                raise ValueError('plant.set needs "input" (an input or load) or "param", and "value"')
            name = ev.get("input")
            for pin, w in b.outputs.items():
                if w["signal"] == name:
                    raise ValueError("%r is driven by pin %d (%s): the node's output sets it"
                                     % (name, pin, w["kind"]))
            p.disturb(ev)
        elif op == "plant.sensor":
            if "sensor" not in ev:
                raise ValueError('plant.sensor needs "sensor" and "fault"')
            p.disturb(ev)
            b._refresh()  # the ADC shows the fault at once
        elif op == "plant.clear":
            for name in p.outputs:
                p.disturb(sensor=name, fault="none")
            b._refresh()
        else:
            raise ValueError("unknown plant request %r" % (op,))

    def state(self):
        """The true plant state, what its sensors read, and the pins (JSON-ready)."""
        b = self.bench
        p = b.plant
        signals = {}
        for name in p.outputs:
            signals[name] = p.true(name)
        for name in p.inputs + p.loads:
            signals[name] = p.get_input(name)
        sensors = {}
        for i, name in enumerate(p.outputs):
            kind, v = p.fault(name)
            s = {"reading": v if kind == "stuck" else p._last[i], "fault": kind}
            if kind == "noise":
                s["std"] = v
            elif kind != "none":
                s["value"] = v
            sensors[name] = s
        pins = {}
        for pin, w in b.inputs.items():
            if w["kind"] == "adc":
                pins[str(pin)] = {"kind": "adc", "signal": w["signal"], "uv": b.uv[pin]}
            else:
                pins[str(pin)] = {"kind": w["kind"], "signal": w["signal"], "level": b.level[pin]}
        for pin, w in b.outputs.items():
            pins[str(pin)] = {"kind": w["kind"], "signal": w["signal"],
                              "fraction": b.out_num[pin] / b.out_den[pin]}
        clock = b.clock
        return {"type": p.TYPE, "time_s": clock.now_us() / 1_000_000, "plant_time_s": p.time_s,
                "virtual_time": clock.virtual, "signals": signals, "sensors": sensors,
                "pins": pins, "pending": p.pending()}
