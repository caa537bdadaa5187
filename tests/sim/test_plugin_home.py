"""Issue 14, items 2 and 3: the HIL plugin in a user's project writes nothing outside its own
temporary home (not the user's $CYPHY_HOME: a test node named like a real node must not
overwrite that node's key), adds no warning to the user's tests, and draws plots under
pytest's temporary directory, never into the user's rootdir unasked. The suite's own
conftest and fixtures leave nothing in the CYPHY_HOME they were given either."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

INNER = '''
import pytest

def test_plain():
    assert 1 + 1 == 2

@pytest.mark.cyphy(virtual_time=True)
def test_oven(node, control):
    with node.connect() as n:
        assert n.name == "test_oven"
    r = node.step("oven", 60.0, seconds=300, period_ms=2000)
    control.assert_step(r, settling_time_max=1)   # fails: a plot is drawn
'''


def snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under d: (mode, content) (b"" for a directory)."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(d))] = (st.st_mode, b"" if stat.S_ISDIR(st.st_mode) else p.read_bytes())
    return out


def users_home(tmp_path: Path) -> Path:
    home = tmp_path / "users-cyphy-home"
    (home / "keys").mkdir(parents=True)
    # the user's real node happens to be named like the test node
    (home / "keys" / "test_oven.key").write_text("ab" * 32 + "\n")
    (home / "keys" / "oven-1.key").write_text("cd" * 32 + "\n")
    os.chmod(home / "keys" / "test_oven.key", 0o600)
    return home


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CYPHY_KEY"))}
    env["CYPHY_HOME"] = str(home)
    return env


def test_a_users_hil_session_leaves_their_cyphy_home_and_rootdir_alone(tmp_path):
    home = users_home(tmp_path)
    before = snapshot(home)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "test_inner.py").write_text(INNER)
    base = tmp_path / "basetemp"
    p = subprocess.run([sys.executable, "-m", "pytest", "test_inner.py", "-p", "no:cacheprovider",
                        "-q", "-rA", "--basetemp", str(base)],
                       cwd=proj, env=env_for(home), capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert "1 failed, 1 passed" in out, out
    assert "step response out of spec" in out, out
    # the user's key store, byte for byte (and nothing added: no key, no cache, no sim node)
    assert snapshot(home) == before, out
    # no warning added to the user's tests
    assert "warning" not in out.lower(), out
    # the plot: under pytest's temporary directory, not in the project
    assert sorted(x.name for x in proj.iterdir()) == ["test_inner.py"], out
    pngs = list(base.rglob("*.png"))
    assert len(pngs) == 1 and "test_oven" in pngs[0].name, out
    assert f"plot: {pngs[0]}" in out, out


def test_the_suites_own_fixtures_leave_the_given_cyphy_home_alone(tmp_path):
    # the example HIL suite (the plugin under tests/conftest.py) and a sim test using the
    # suite's own cyphy_home fixture, run with the user's CYPHY_HOME
    home = users_home(tmp_path)
    before = snapshot(home)
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0",
                        "--basetemp", str(tmp_path / "bt"),
                        "tests/hil/test_repl_and_provisioning.py::test_repl_while_the_loop_runs",
                        "tests/sim/test_provision.py::test_a_config_error_names_the_field_and_writes_nothing"],
                       cwd=REPO, env=env_for(home), capture_output=True, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "2 passed" in out, out
    assert snapshot(home) == before, out
