"""`cyphy tune`: the relay autotune of a running node's loop, over the protocol."""

from __future__ import annotations

import sys
from typing import Any

import click

from cyphy import codec as P
from cyphy.cli.common import Interrupted, emit, errors, key_options, unprovisioned_option
from cyphy.cli.node import URL_HELP, _connect, node_units, num

JSON_KEYS = ("ku", "pu_s", "model", "rule", "why", "kp", "ki", "kd", "stable", "reason",
             "applied")


@click.command(short_help="Autotune a loop (relay experiment) and show the gains it chose.")
@click.argument("url", metavar="URL")
@click.argument("loop")
@click.option("--rule", type=click.Choice(P.TUNE_RULES), default="auto", show_default=True,
              help="auto: chosen from the plant the experiment identified (docs/control.md); "
                   "or a classic rule on the ultimate point.")
@click.option("--amplitude", type=click.FloatRange(min=0, min_open=True),
              help="Relay swing, +- output units around the output now (default: a fifth of "
                   "the actuator's range).")
@click.option("--hysteresis", type=click.FloatRange(min=0, min_open=True),
              help="Relay hysteresis in measurement units, above the noise (default: 0.5 % "
                   "of the sensor's valid range).")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 65535),
              help="Give up after this long, s (default: scaled to the loop's rate and the "
                   "period it sees).")
@click.option("--apply/--no-apply", default=True, show_default=True,
              help="Apply (and persist) a stable result, or only identify and report.")
@click.option("--clear", is_flag=True,
              help="Instead: forget the loop's persisted tuning (an applied autotune, values "
                   "kept with set --save): the config's values, now and at every boot.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
@key_options
@unprovisioned_option
@errors
def tune(url: str, loop: str, rule: str, amplitude: float | None, hysteresis: float | None,
         timeout_s: int | None, apply: bool, clear: bool, as_json: bool, key_file: str | None,
         unprovisioned: bool) -> None:
    """Run the relay autotune of LOOP on the node at URL: the relay swings the output around
    the setpoint until four oscillations are measured (progress on stderr), then the node
    identifies the plant, picks the gains and, if the result is stable and --apply, applies
    and persists them. A run that is not stable or times out changes nothing. Ctrl-C (or
    this host going away) stops it: the loop returns to its previous gains and output."""
    with _connect(url, key_file, unprovisioned) as n:
        if clear:
            n.forget_tuning(loop)
            st = n.get(loop)
            src = st.get("sources", {}) if isinstance(st, dict) else {}
            now = ", ".join(f"{k} {num(st.get(k))} ({v})" for k, v in src.items())
            click.echo(f"{loop}: persisted tuning forgotten; in force now: {now}")
            return
        units = node_units(n).get(loop, {})

        def progress(st: dict) -> None:
            done, want = st.get("cycles") or (0, 0)
            last = ""
            if st.get("period_s"):
                last = (f": period {st['period_s']:.3g} s, amplitude "
                        f"{num(st['amplitude'])} {units.get('measurement', '')}".rstrip())
            click.echo(f"{loop}: relay running, {done}/{want} cycles measured{last}", err=True)

        try:
            r = n.tune(loop, rule=rule, amplitude=amplitude or 0.0,
                       hysteresis=hysteresis or 0.0, timeout_s=timeout_s or 0, apply=apply,
                       progress=None if as_json else progress, poll_s=1.0)
        except KeyboardInterrupt:
            raise Interrupted(f"the tune was stopped; {loop} is back on its previous gains "
                              f"and output") from None
    emit({k: r.get(k) for k in JSON_KEYS} | {k: v for k, v in r.items() if k not in JSON_KEYS
                                            and k not in ("rules",)},
         as_json, lambda _: _text(loop, r, units))


def _text(loop: str, r: dict[str, Any], units: dict[str, str]) -> str:
    lines = []
    if r.get("ku") is not None:
        lines.append(f"{loop}: ultimate gain Ku {num(r['ku'])}, period Pu {num(r.get('pu_s'))} s")
    m = r.get("model")
    if isinstance(m, dict):
        lines.append("identified plant: " + ", ".join(f"{k} {num(v)}" for k, v in m.items()))
    if r.get("rule"):
        lines.append(f"rule: {r['rule']}" + (f" ({r['why']})" if r.get("why") else ""))
    if r.get("kp") is not None:
        lines.append(f"gains: kp {num(r['kp'])}, ki {num(r['ki'])}, kd {num(r['kd'])}")
    if r.get("applied"):
        lines.append("applied and persisted (cyphy tune --clear URL LOOP forgets it)")
    else:
        lines.append("not applied: " + str(r.get("reason") or "unstable or refused")
                     + "; the loop keeps its previous gains")
    return "\n".join(lines)
