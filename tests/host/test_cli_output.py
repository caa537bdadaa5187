"""Output for people (issue 14), the parts that need no node: units from a node's info
(and none from older firmware), tables as plain text off a terminal, plots of old and new
recordings, across a node reset."""

from __future__ import annotations

from pathlib import Path

from cyphy.cli.node import format_get, units_of
from cyphy.plot import plot_recording, read_recording

OLD_HEADER = "host_time,t_ms,loop,setpoint,measurement,output,mode,alarms,faults\n"


def test_units_from_info_and_from_older_firmware():
    assert units_of({"units": {"oven": {"measurement": "degC", "output": "%"}}}) == {
        "oven": {"measurement": "degC", "output": "%"}}
    assert units_of({"name": "oven-1"}) == {}          # firmware without units
    assert units_of(60.0) == {} and units_of({"units": "garbage"}) == {}
    state = {"setpoint": 60.0, "measurement": 59.5, "output": 12.0, "mode": "auto"}
    assert "60 degC" in format_get("oven", state, {"oven": {"measurement": "degC", "output": "%"}})
    plain = format_get("oven", state, {})
    assert "setpoint     60" in plain and "degC" not in plain
    assert format_get("oven.output", 12.5, {"oven": {"measurement": "degC", "output": "%"}}) == "12.5 %"
    assert format_get("oven.output", 12.5, {}) == "12.5"


def test_tables_off_a_terminal_are_aligned_text():
    out = format_get("state", {"oven": {"setpoint": 60.0, "measurement": 59.5, "output": 12.0,
                                        "mode": "auto", "alarms": [], "faults": [], "kp": 4.9,
                                        "ki": 0.03, "kd": 0.0}},
                     {"oven": {"measurement": "degC", "output": "%"}})
    head, row = out.splitlines()
    assert head.split() == ["loop", "mode", "setpoint", "measurement", "output", "alarms",
                            "faults", "kp", "ki", "kd"]
    assert row.split()[:8] == ["oven", "auto", "60", "degC", "59.5", "degC", "12", "%"]
    assert head.index("setpoint") + len("setpoint") == row.index("60 degC") + len("60 degC")
    assert format_get("faults", [], {}) == "no faults recorded"


def test_an_old_recording_still_plots(tmp_path: Path):
    rec = tmp_path / "old.csv"
    rec.write_text(OLD_HEADER + "".join(f"{1000 + i / 10:.3f},{100 * i},oven,60,{20 + i},5,auto,,\n"
                                        for i in range(20)))
    loops = read_recording(rec)
    assert loops["oven"]["units"] == {"measurement": "", "output": ""}
    assert plot_recording(rec, tmp_path / "old.png") == ["oven"]
    assert (tmp_path / "old.png").read_bytes()[:4] == b"\x89PNG"


def test_units_and_a_reset_in_a_recording(tmp_path: Path):
    rec = tmp_path / "new.csv"
    rows = [f"{1000 + i / 10:.3f},{500000 + 100 * i},oven,60,{20 + i},5,auto,,,degC,%\n"
            for i in range(10)]
    # the node reset: 5 s later on the host's clock, its ticks_ms start again near 0
    rows += [f"{1005.9 + i / 10:.3f},{300 + 100 * i},oven,60,{30 + i},5,auto,,,degC,%\n"
             for i in range(10)]
    rec.write_text(OLD_HEADER.rstrip("\n") + ",measurement_units,output_units\n" + "".join(rows))
    d = read_recording(rec)["oven"]
    assert d["units"] == {"measurement": "degC", "output": "%"}
    t = d["t"]
    assert all(b > a for a, b in zip(t, t[1:]))       # time never runs backwards
    assert abs(t[10] - t[9] - 5.0) < 0.01             # the gap is the host's
    assert plot_recording(rec, tmp_path / "new.svg") == ["oven"]
    assert b"degC" in (tmp_path / "new.svg").read_bytes()


def test_a_recording_with_signals_plots_them(tmp_path: Path):
    # cyphy monitor --csv writes a row per signal (a block's or device channel's value,
    # mode "signal", the value as the measurement, no setpoint or output)
    from cyphy.cli.node import CSV_FIELDS

    rows = []
    for i in range(10):
        t = f"{1000 + i / 10:.3f},{100 * i}"
        rows.append(f"{t},kiln,500,{480 + i},40,auto,,,degC,%\n")
        rows.append(f"{t},tc,,{480.25 + i},,signal,,,,\n")
    rec = tmp_path / "sig.csv"
    rec.write_text(",".join(CSV_FIELDS) + "\n" + "".join(rows))
    d = read_recording(rec)
    assert d["tc"]["measurement"][:2] == [480.25, 481.25]
    assert all(v != v for v in d["tc"]["setpoint"])          # NaN: no setpoint
    assert plot_recording(rec, tmp_path / "sig.png") == ["kiln", "tc"]
