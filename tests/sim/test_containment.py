"""Nothing a node runs can read or write host files outside its own flash image."""

from __future__ import annotations

import pytest

from serial_console import Console


@pytest.fixture
def con(sim_node):
    with Console(sim_node.port) as c:
        c.raw()
        yield c


def run(con: Console, src: str) -> tuple[str, str]:
    out, err = con.raw_exec(src.encode())
    return out.decode(), err.decode()


def test_dotdot_stays_in_the_image(con, tmp_path):
    # LittleFS refuses to climb above its root (EINVAL), exactly as on an ESP32
    for path in ("/..", "/../..", "/lib/../../.."):
        out, err = run(con, f"import os; print(os.listdir({path!r}))")
        assert out in ("", "[]\r\n", "['boot.py']\r\n") and ("EINVAL" in err or err == ""), path
    out, err = run(con, "open('/../../etc/passwd')")
    assert out == "" and "OSError: [Errno 22] EINVAL" in err


def test_absolute_host_paths_are_not_reachable(con, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    for path in (str(secret), "/etc/passwd", "/proc/self/environ"):
        _, err = run(con, f"open({path!r}).read()")
        assert "OSError" in err, path
    _, err = run(con, f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')")
    assert "OSError" in err
    assert not (tmp_path / "new.txt").exists()


def test_host_only_modules_are_hidden(con):
    out, err = run(con, "import os, vfs; print([n for n in ('system', 'getenv', 'VfsPosix') if hasattr(os, n) or hasattr(vfs, n)])")
    assert (out, err) == ("[]\r\n", "")


def test_digging_out_the_real_modules_still_finds_nothing(con, tmp_path):
    """Even code that unhides the Unix port's os/vfs is stopped by the kernel sandbox."""
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    marker = tmp_path / "made-by-node"
    src = (
        "import sys\n"
        "for m in ('os', 'vfs'):\n"
        "    sys.modules.pop(m, None)\n"
        "import os, vfs\n"
        "r = []\n"
        "try:\n"
        f"    r.append(os.system('touch {marker}'))\n"
        "except Exception as e:\n"
        "    r.append(repr(e))\n"
        "try:\n"
        "    vfs.mount(vfs.VfsPosix('/'), '/host')\n"
        f"    r.append(open('/host{secret}').read())\n"
        "except Exception as e:\n"
        "    r.append(repr(e))\n"
        "print(r)\n"
    )
    out, err = run(con, src)
    assert err == ""
    assert "host data" not in out
    assert not marker.exists()


def test_sandbox_is_reported(sim_node):
    import json
    import subprocess

    from helpers import tool

    rows = json.loads(subprocess.run([tool("cyphy"), "sim", "list", "--json"], capture_output=True, text=True, check=True).stdout)
    assert rows[0]["sandbox"] == "landlock"
