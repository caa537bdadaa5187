"""PNG plots of recorded runs: `cyphy plot FILE.csv` (a `cyphy monitor --csv` recording)
and the HIL plugin's step responses. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Sequence


class PlotError(Exception):
    pass


def read_recording(path: Path) -> dict[str, dict[str, list[float]]]:
    """{loop: {"t": seconds from the first sample, "setpoint": [...], ...}} from a CSV."""
    try:
        f = path.open(newline="")
    except OSError as e:
        raise PlotError(f"{path}: {e.strerror}") from None
    with f:
        rows = list(csv.DictReader(f))
    need = {"t_ms", "loop", "setpoint", "measurement", "output"}
    if not rows or not need <= set(rows[0]):
        raise PlotError(f"{path}: not a cyphy monitor recording (needs columns "
                        f"{', '.join(sorted(need))})")
    loops: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    t0 = None
    last = None
    wraps = 0
    for i, r in enumerate(rows, start=2):
        try:
            t = int(r["t_ms"])
            vals = [float(r[k]) for k in ("setpoint", "measurement", "output")]
        except (TypeError, ValueError):
            raise PlotError(f"{path}, line {i}: not a number") from None
        if last is not None and t < last - (1 << 29):
            wraps += 1  # the node's ticks_ms wrapped (every 2**30 ms on ESP32)
        last = t
        t += wraps << 30
        t0 = t if t0 is None else t0
        d = loops[r["loop"]]
        d["t"].append((t - t0) / 1000)
        for k, v in zip(("setpoint", "measurement", "output"), vals):
            d[k].append(v)
    return {k: dict(v) for k, v in loops.items()}


def plot_response(path: Path, t: Sequence[float], setpoint: Sequence[float],
                  measurement: Sequence[float], output: Sequence[float] | None = None,
                  title: str = "", notes: Sequence[str] = ()) -> Path:
    """One loop's response: setpoint and measurement above, output below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 2 if output is not None else 1
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(8, 5 if n == 2 else 3.5), squeeze=False)
    ax = axes[0][0]
    ax.plot(t, setpoint, "--", label="setpoint")
    ax.plot(t, measurement, label="measurement")
    ax.set_ylabel("value")
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    for i, line in enumerate(notes):
        ax.text(0.01, 0.02 + 0.06 * i, line, transform=ax.transAxes, fontsize=8)
    if output is not None:
        axes[1][0].plot(t, output, color="tab:red", label="output")
        axes[1][0].set_ylabel("output")
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
        a.set_title(name)
        a.legend(loc="best")
        b.plot(d["t"], d["output"], color="tab:red")
        b.set_title(f"{name}: output")
        for ax in (a, b):
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("time (s)")
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=100)
    except OSError as e:
        raise PlotError(f"{png}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return sorted(loops)
