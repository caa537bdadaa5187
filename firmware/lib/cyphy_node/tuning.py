# Running relay autotunes on a node: starting one (node.autotune / node.tune, the protocol's
# TUNE), its status, stopping it, and what happens to its result (applied only if stable,
# kept in the persisted layer, params.py: /autotune.json, applied again at every boot).
# docs/control.md, "Relay autotune" and "Running a tune".
#
# Loaded only while a tune runs, or at boot when /autotune.json exists, and unloaded after
# (unload()): a node that is not tuning pays no RAM for it. Everything here runs in the
# soft context (Node.soft_call or the service), never in the control tick: the tick only
# calls RelayTune.update and PID.track (ControlLoop._control).
import sys

from . import params


def start(node, name, high, low, hyst, rule, cycles, settle, timeout_s, apply=True,
          owner=None):
    from .autotune import RelayTune, rules

    lp = node.loop(name)
    if lp.pid is None:
        raise ValueError("%s: autotune needs a PID loop" % name)
    if rule != "auto" and rule not in rules(1.0, 1.0):
        raise ValueError("rule must be auto or one of " + ", ".join(sorted(rules(1.0, 1.0))))
    if lp.tuner is not None:
        raise ValueError("%s: an autotune is already running" % name)
    tuner = RelayTune(lp.pid.setpoint / 1000, lp.period_us / 1000000, high, low, hyst,
                      reverse=lp.pid.reverse, cycles=cycles, settle=settle, timeout=timeout_s)
    lp.tune_rule = rule
    lp.tune_apply = apply
    lp.tune_owner = owner
    lp.tune_u0 = lp.u                   # the output to return to if the run is refused
    lp.pid.set_manual(lp.u)             # tracks while the relay drives (ControlLoop._control)
    lp.tuner = tuner
    node._tuning += 1


def relay(lp, amplitude, hyst):
    """(high, low, hyst) of a tune as a user starts it: +-amplitude (default: a fifth of the
    actuator's range) around the output now, within the actuator's range; hyst default
    0.5 % of the sensor's valid range."""
    lo, hi = lp.act.lo / 1000, lp.act.hi / 1000
    a = amplitude or (hi - lo) / 5
    u0 = lp.u / 1000
    high, low = min(hi, u0 + a), max(lo, u0 - a)
    if high - low < (hi - lo) / 50:
        raise ValueError("the relay would swing the output only %s..%s %s: give a larger "
                         "amplitude, or start from an output inside the range %s..%s"
                         % (low, high, lp.act.units, lo, hi))
    return high, low, hyst or (lp.inp.vmax - lp.inp.vmin) / 1000 * 0.005


def progress(lp):
    """A running tune's progress (Node.tune_status)."""
    t = lp.tuner
    last = t.last_cycle()
    return {"running": True, "cycles": t.progress(),
            "period_s": last and last[0], "amplitude": last and last[1]}


def abort(node, name, why):
    lp = node.loop(name)
    if lp.tuner is None:
        return False
    lp.tuner = None
    _keep(node, lp, {"ok": False, "stable": False, "applied": False, "reason": why})
    _end(node, lp, lp.tune_u0)
    return True


def check(node):
    for lp in node.loops:
        if lp.tuner is not None and lp.tuner.status:  # DONE or FAILED
            # a second run for a second point of the frequency response (rule "auto")
            try:
                nxt = lp.tuner.follow_up() if lp.tune_rule == "auto" else None
            except Exception:   # noqa: BLE001 - (MemoryError) no second run: the first's result
                nxt = None
            if nxt is not None:
                lp.tuner = nxt
            else:
                _finish(node, lp)


def _finish(node, lp):
    # Once per autotune: keep the result; apply the gains only if the run finished and was
    # stable (and apply was asked), else return to the output before the tune. Whatever
    # fails on the way (the result's arithmetic, out of memory, a gain the PID cannot
    # hold), the loop is given back and the tune ends: it never keeps the loop on the
    # relay, nor stops the node's service (which would retry it every pass).
    t, lp.tuner = lp.tuner, None
    back = lp.tune_u0
    try:
        r = _outcome(lp, t)
        if r["applied"]:
            back = lp.u                 # the relay's last output: the PID goes on from it
    except Exception as e:  # noqa: BLE001 - reported in the result; the loop goes back
        r = {"ok": False, "stable": False, "applied": False,
             "reason": "the result could not be computed on the node (%s: %s); nothing "
                       "applied" % (type(e).__name__, e)}
    _keep(node, lp, r)
    _end(node, lp, back)


def _keep(node, lp, r):
    # The result in the persisted layer; if even that fails (out of memory for its JSON),
    # in RAM only (tune_status still says it): the loop is given back either way.
    try:
        params.keep_tune(node, lp, r)
    except Exception:  # noqa: BLE001 - (MemoryError)
        lp.tune_result = r


def _outcome(lp, t):
    # The run's result with the rule asked for, applied if trusted and asked to.
    r = t.result()
    rule = lp.tune_rule
    if r.get("stable") and rule != "auto":
        g = r["rules"][rule]
        r["rule"], r["why"] = rule, "asked for"
        r["kp"], r["ki"], r["kd"] = g["kp"], g["ki"], g["kd"]
        r.pop("d_filter", None)
        r.pop("p_on_m", None)
        r.pop("sp_weight", None)
    if r["ok"] and r.get("stable") and lp.tune_apply:
        params.apply_tune(lp, r)        # sets r["applied"] (False: a gain it cannot hold)
    else:
        r["applied"] = False
        if r["ok"] and r.get("stable"):
            r["reason"] = "not applied: asked to identify only"
    return r


def _end(node, lp, back):
    # The PID takes over from `back` (milli-units): the relay's last output after an
    # applied run, the output before the run otherwise. Bumpless: the PID tracked the
    # measurement and the relay's output all along (ControlLoop._control).
    node._tuning -= 1
    lp.tune_owner = None
    lp.pid.set_manual(back)
    if lp.auto:
        lp.pid.set_auto()
    else:                    # a loop in manual goes back to its manual output
        lp.pid.set_manual(lp.manual_out)
    if not node._tuning:
        unload()


def unload():
    """Forget this module, autotune.py and params.py (RAM only while a tune runs)."""
    import cyphy_node

    for m in ("autotune", "tuning", "params"):
        sys.modules.pop("cyphy_node." + m, None)
        try:
            delattr(cyphy_node, m)
        except (AttributeError, KeyError):  # (MicroPython: KeyError for a module's)
            pass
