# A loop's setpoint and gains come from three layers, later ones winning (docs/control.md,
# "Where a loop's parameters come from"):
#     config  <  persisted (on flash: an applied autotune, `set --save`)  <  runtime change
# At boot the config's values are applied, then the persisted layer's. While the node runs,
# the latest change wins and ControlLoop.src says where each value in force came from
# (SOURCES: config, tune, saved, runtime). The persisted layer is one JSON file
# (/autotune.json), one record per loop: the last autotune result (its kp, ki, kd, d_filter,
# p_on_m are in force when "applied") and "saved": {key: value} from `set --save`.
#
# Loaded only at boot when the file exists, to save or forget, and by tuning.py; unloaded
# after (tuning.unload): a node that never persisted anything pays no RAM for it. Runs in
# the soft context (or before the loops start), never in the control tick.

GAINS = ("kp", "ki", "kd")


def _gain_layer(r):
    """The persisted tune result's gains if they are in force, else None."""
    if not (r and r.get("ok") and r.get("applied", True)):
        return None
    if "kp" not in r and r.get("rule") in r.get("rules", {}):
        r.update(r["rules"][r["rule"]])         # a file from before the "auto" rule
    return r if "kp" in r else None


def load(node):
    """Apply the persisted layer to every loop (at boot); returns it ({} if none)."""
    import json

    try:
        with open(node.tune_path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    for lp in node.loops:
        rec = saved.get(lp.name)
        if not isinstance(rec, dict):
            continue
        if lp.pid is not None and _gain_layer(rec) is not None:
            apply_tune(lp, rec)
        vals = rec.get("saved")
        if isinstance(vals, dict) and vals:
            try:
                apply_values(lp, vals, 2)
            except (ValueError, KeyError) as e:
                # a saved value the config no longer allows (channel range, on/off loop)
                print("cyphy: %s: persisted value not applied: %s" % (lp.name, e))
    return saved


def apply_tune(lp, r):
    """Put a tune result's gains in force (source "tune"): kp, ki, kd, and d_filter, p_on_m
    and sp_weight where the result has them; r["applied"] says whether they could be (a
    gain the fixed-point PID cannot hold keeps the old ones)."""
    pid = lp.pid
    tf = pid.tf
    b = pid.sp_weight
    try:
        if "d_filter" in r:
            pid.set_d_filter(r["d_filter"])
        pid.set_tunings(r["kp"], r["ki"], r["kd"], r.get("p_on_m"))
        if "sp_weight" in r:                    # the rule's setpoint weight (after p_on_m)
            pid.set_sp_weight(r["sp_weight"])
    except ValueError as e:
        pid.set_d_filter(tf)
        pid.set_sp_weight(b)
        r["applied"] = False
        r["error"] = str(e)
        return
    r["applied"] = True
    for k in GAINS:
        lp.src[lp.SRC_KEYS.index(k)] = 1


def apply_values(lp, vals, src):
    """Set {key: value} (setpoint, kp, ki, kd) on lp, all checked first, and mark their
    source (2 saved, 0 config). ValueError/KeyError name the first refused."""
    gains = {}
    plan = [lp.prepare(k, vals[k], gains) for k in vals]
    for fn, args in plan:
        fn(*args)
    for k in vals:
        lp.src[lp.SRC_KEYS.index(k)] = src


def keep_tune(node, lp, r):
    """Keep an autotune's result in the persisted layer. A run not applied never replaces
    applied gains (it is kept beside them as "last_refused"); values saved with `set
    --save` stay, except the gains an applied run replaces."""
    lp.tune_result = r
    prev = node.tuned.get(lp.name) or {}
    vals = prev.get("saved") or {}
    if r["applied"]:
        vals = {k: v for k, v in vals.items() if k not in GAINS}
    if r["applied"] or _gain_layer(prev) is None:
        rec = r
    else:
        rec = prev
        rec["last_refused"] = r
    if vals:
        rec["saved"] = vals
    else:
        rec.pop("saved", None)
    node.tuned[lp.name] = rec
    write(node)


def save_values(node, lp, keys):
    """Persist the values in force of keys (setpoint, kp, ki, kd) for lp (`set --save`)."""
    rec = node.tuned.get(lp.name)
    if rec is None:
        rec = node.tuned[lp.name] = {}
    vals = rec.get("saved") or {}
    st = lp.state()
    for k in keys:
        vals[k] = st[k]
        lp.src[lp.SRC_KEYS.index(k)] = 2
    rec["saved"] = vals
    write(node)


def forget(node, name):
    """Forget loop `name`'s persisted layer: the values that came from it (source tune or
    saved) go back to the config's, now and at boot; runtime changes stay. Returns the
    keys reverted."""
    lp = node.loop(name)
    rec = node.tuned.pop(name, None)
    if rec is not None:
        write(node)
    back = [k for k in lp.SRC_KEYS if lp.src[lp.SRC_KEYS.index(k)] in (1, 2)]
    tuned = lp.src[1] == 1 or lp.src[2] == 1 or lp.src[3] == 1  # and the tune's filter, P weighting
    if lp.pid is not None and any(k in GAINS for k in back):
        kp, ki, kd, tf, pom = lp.cfg_tuning
        g = list(lp.pid.get_tunings())
        for i in range(3):
            if GAINS[i] in back:
                g[i] = (kp, ki, kd)[i]
        if tuned:
            lp.pid.set_d_filter(tf)
            lp.pid.set_tunings(g[0], g[1], g[2], pom)   # bumpless: I absorbs the change
        else:
            lp.pid.set_tunings(*g)
        for k in GAINS:
            if k in back:
                lp.src[lp.SRC_KEYS.index(k)] = 0
    if "setpoint" in back:
        apply_values(lp, {"setpoint": lp.cfg_sp}, 0)
    return back


def write(node):
    import json
    from .store import write_atomic

    try:
        if node.tuned:
            write_atomic(node.tune_path, json.dumps(node.tuned))
        else:
            import os
            os.remove(node.tune_path)
    except OSError:
        pass
