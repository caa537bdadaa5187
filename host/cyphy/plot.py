"""PNG plots of recorded runs: `cyphy plot FILE.csv` (a `cyphy monitor --csv` recording)
and the HIL plugin's step responses. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Sequence


class PlotError(Exception):
    pass


# What matplotlib's Agg canvas writes (a name's suffix picks the format).
FORMATS = ("png", "svg", "pdf")


def read_recording(path: Path) -> dict[str, dict[str, list]]:
    """{loop: {"t": seconds from the first sample, "setpoint": [...], ..., "units":
    {"measurement": "degC", "output": "%"}}} from a CSV. The units come from the
    recording's measurement_units/output_units columns (empty in older recordings). The
    time axis follows the node's ticks_ms across its wrap, and across a node reset
    (monitor goes on after one; ticks_ms starts over) it follows the host's clock."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise PlotError(f"{path}: {e.strerror}") from None
    try:
        with f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError:
        raise PlotError(f"{path}: a binary file, not a CSV recording (record one with "
                        f"cyphy monitor URL --csv FILE.csv)") from None
    except csv.Error as e:
        raise PlotError(f"{path}: not a CSV file ({e})") from None
    need = {"t_ms", "loop", "setpoint", "measurement", "output"}
    if not rows or not need <= set(rows[0]):
        raise PlotError(f"{path}: not a cyphy monitor recording (needs columns "
                        f"{', '.join(sorted(need))}; record one with cyphy monitor URL --csv FILE.csv)")
    loops: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    units: dict[str, dict[str, str]] = {}
    t0 = None
    last = None      # the previous row's ticks_ms, as read
    last_t = None    # ... and on the plot's continuous axis (ms)
    last_host = None
    offset = 0
    for i, r in enumerate(rows, start=2):
        try:
            raw = int(r["t_ms"])
            # a signal's row (a block or device channel: mode "signal") has only its value,
            # in measurement: no setpoint, no output
            sig = r.get("mode") == "signal"
            vals = [float("nan") if sig and k != "measurement" else float(r[k])
                    for k in ("setpoint", "measurement", "output")]
        except (TypeError, ValueError):
            raise PlotError(f"{path}, line {i}: not a number") from None
        try:
            host = float(r.get("host_time") or "nan")
        except ValueError:
            host = float("nan")
        if last is not None and raw < last:
            if raw < last - (1 << 29):
                offset += 1 << 30  # the node's ticks_ms wrapped (every 2**30 ms on ESP32)
            else:  # the node reset: go on from the host's clock (or right after)
                gap = (host - last_host) * 1000 if last_host is not None and host == host else 0
                offset = int(last_t + max(gap, 1)) - raw
        last = raw
        t = raw + offset
        last_t, last_host = t, (host if host == host else last_host)
        t0 = t if t0 is None else t0
        d = loops[r["loop"]]
        d["t"].append((t - t0) / 1000)
        for k, v in zip(("setpoint", "measurement", "output"), vals):
            d[k].append(v)
        u = {k: (r.get(f"{k}_units") or "").strip() for k in ("measurement", "output")}
        if any(u.values()):
            units[r["loop"]] = u
    out = {k: dict(v) for k, v in loops.items()}
    for k, d in out.items():
        d["units"] = units.get(k, {"measurement": "", "output": ""})
    return out


def _label(what: str, unit: str) -> str:
    return f"{what} ({unit})" if unit else what


def plot_response(path: Path, t: Sequence[float], setpoint: Sequence[float],
                  measurement: Sequence[float], output: Sequence[float] | None = None,
                  title: str = "", notes: Sequence[str] = (), units: dict | None = None) -> Path:
    """One loop's response: setpoint and measurement above, output below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 2 if output is not None else 1
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(8, 5 if n == 2 else 3.5), squeeze=False)
    ax = axes[0][0]
    ax.plot(t, setpoint, "--", label="setpoint")
    ax.plot(t, measurement, label="measurement")
    units = units or {}
    ax.set_ylabel(_label("value", units.get("measurement", "")))
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    for i, line in enumerate(notes):
        ax.text(0.01, 0.02 + 0.06 * i, line, transform=ax.transAxes, fontsize=8)
    if output is not None:
        axes[1][0].plot(t, output, color="tab:red", label="output")
        axes[1][0].set_ylabel(_label("output", units.get("output", "")))
        axes[1][0].grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_recording(csv_path: Path, png: Path) -> list[str]:
    """Every loop of a recording into one PNG (one row of axes per loop); the loops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loops = read_recording(csv_path)
    fig, axes = plt.subplots(len(loops), 2, figsize=(11, 3.2 * len(loops)), squeeze=False)
    for row, (name, d) in enumerate(sorted(loops.items())):
        a, b = axes[row]
        a.plot(d["t"], d["setpoint"], "--", label="setpoint")
        a.plot(d["t"], d["measurement"], label="measurement")
        u = d["units"]
        a.set_title(name)
        a.set_ylabel(_label("setpoint, measurement", u["measurement"]))
        a.legend(loc="best")
        b.plot(d["t"], d["output"], color="tab:red")
        b.set_title(f"{name}: output")
        b.set_ylabel(_label("output", u["output"]))
        for ax in (a, b):
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("time (s)")
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=100)
    except OSError as e:
        raise PlotError(f"{png}: {e.strerror}") from None
    except ValueError as e:  # a format matplotlib does not write
        raise PlotError(f"{png}: {e}") from None
    finally:
        plt.close(fig)
    return sorted(loops)
