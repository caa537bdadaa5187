"""`cyphy gateway --config FILE`: the file's shape is checked field by field, one line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cyphy.gateway import GatewayError, check_allow_pattern
from cyphy.gateway_config import GatewayConfigError, load


def test_a_whole_file_loads(tmp_path: Path) -> None:
    p = tmp_path / "gw.json"
    p.write_text(json.dumps({"broker": "mqtt://h", "group": "g", "edge": "e",
                             "nodes": ["sim://a", "udp://10.0.0.7"], "discover": True,
                             "allow": ["*/setpoint"], "period_ms": 50, "batch": 4,
                             "report_s": 2.5, "primary_host": "scada1", "key_file": "k"}))
    cfg = load(p)
    assert cfg["discover"] == 5477 and cfg["nodes"] == ["sim://a", "udp://10.0.0.7"]
    p.write_text(json.dumps({"discover": False}))
    assert load(p) == {}


@pytest.mark.parametrize("text, said", [
    ("{", "not JSON (line 1"),
    ("[]", "a JSON object is expected"),
    ('{"brokr": "mqtt://h"}', "brokr: unknown key (known: broker,"),
    ('{"nodes": "sim://a"}', 'nodes: "sim://a" is not a list of node URLs'),
    ('{"nodes": ["sim://a", 5]}', "nodes[1]: 5 is not a string"),
    ('{"batch": true}', "batch: true is not samples per frame"),
    ('{"period_ms": 1.5}', "period_ms: 1.5 is not the telemetry period"),
    ('{"allow": [""]}', 'allow[0]: "" is not a string'),
])
def test_a_bad_file_is_one_line_naming_the_field(tmp_path: Path, text: str, said: str) -> None:
    p = tmp_path / "gw.json"
    p.write_text(text)
    with pytest.raises(GatewayConfigError) as e:
        load(p)
    assert said in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot read it"):
        load(tmp_path / "nope.json")


@pytest.mark.parametrize("pat", ["*", "*/setpoint", "oven/mode", "oven/k[pid]", "*/tune"])
def test_allow_patterns_that_can_match(pat: str) -> None:
    check_allow_pattern(pat)


@pytest.mark.parametrize("pat", ["setpoint", "oven/bogus", "/setpoint", "oven/"])
def test_allow_patterns_that_cannot_match_are_refused(pat: str) -> None:
    with pytest.raises(GatewayError, match="give LOOP/KEY"):
        check_allow_pattern(pat)
