"""A link URL that cannot work is one line saying what is wrong and what to do (issue 14):
LinkError from cyphy.links.open_link, and `cyphy get` prints it without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cyphy.links import LinkError, open_link

CASES = [
    ("udp://nonexistent.invalid", "cannot find the host 'nonexistent.invalid'"),
    ("udp://127.0.0.1:99999", "the UDP port must be a number from 1 to 65535"),
    ("udp://127.0.0.1:0", "the UDP port must be a number from 1 to 65535"),
    ("serial:///dev/ttyS0?baud=abc", "baud must be a whole number of bits per second"),
    ("serial:///dev/ttyS0?baud=-5", "baud must be a whole number of bits per second"),
]


@pytest.mark.parametrize("url,says", CASES)
def test_open_link_says_what_is_wrong(url, says):
    with pytest.raises(LinkError) as e:
        open_link(url)
    msg = str(e.value)
    assert msg.startswith(url) and says in msg and "\n" not in msg, msg


@pytest.mark.parametrize("url,says", CASES[:2] + CASES[3:4])
def test_cyphy_get_prints_one_line(url, says, tmp_path):
    cyphy = str(Path(sys.executable).parent / "cyphy")
    p = subprocess.run([cyphy, "get", url, "state"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CYPHY_HOME": str(tmp_path)})
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 1, p
    assert len(lines) == 1 and says in lines[0], p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
