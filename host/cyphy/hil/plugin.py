"""cyphy's pytest plugin (registered by the `pytest11` entry point when cyphy is installed):
the same hardware-in-the-loop tests on a sim node (default) and on a real board
(`--cyphy-port /dev/ttyUSB0`). docs/hil.md.

Fixtures: node, nodes (a factory), plant and link (sim only), control (step-response
assertions that save a PNG when they fail), cyphy_hil (the session's settings).
Markers: sim_only, hardware_only, cyphy(config=..., bench=..., virtual_time=..., ...).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .defaults import THERMAL_BENCH, THERMAL_CONFIG
from .node import HilNode

KEY_HEX_DEFAULT = None  # each session makes a fresh key unless --cyphy-key-file is given


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("cyphy", "cyphy hardware-in-the-loop")
    g.addoption("--cyphy-port", default=None,
                help="run `node` on the board at this serial port (default: a sim node)")
    g.addoption("--cyphy-key-file", default=None,
                help="the board's key (hex); default: a new key per session, provisioned")
    g.addoption("--cyphy-wifi", default=None, metavar="SSID:PASSWORD_FILE",
                help="Wi-Fi for UDP tests on hardware (the password is read from the file)")
    g.addoption("--cyphy-plots", default=None,
                help="where failing step responses are drawn (default: beside --junitxml, "
                     "else under pytest's temporary directory, --basetemp)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sim_only: needs the sim (plant, link faults, "
                                       "several nodes); skipped with --cyphy-port")
    config.addinivalue_line("markers", "hardware_only: needs a real board; skipped "
                                       "without --cyphy-port")
    config.addinivalue_line("markers", "cyphy(config=None, bench=None, virtual_time=False, user_dir=None, "
                                       "baud=0, wifi=False): how `node` is set up")
    # pytest-embedded (a cyphy dependency, for its `dut`) asks for record_xml_attribute in a
    # fixture every test uses, which adds a PytestExperimentalApiWarning to every test of
    # every project where cyphy is installed: that one warning is not the user's to see.
    config.addinivalue_line("filterwarnings",
                            "ignore:record_xml_attribute is an experimental feature"
                            ":pytest.PytestExperimentalApiWarning")


def pytest_runtest_setup(item: pytest.Item) -> None:
    hw = item.config.getoption("cyphy_port") is not None
    if hw and item.get_closest_marker("sim_only"):
        pytest.skip("sim only: it uses the sim's plant, link faults or several nodes")
    if not hw and item.get_closest_marker("hardware_only"):
        pytest.skip("hardware only: give --cyphy-port PORT to run it on a board")


@contextlib.contextmanager
def own_home(home: Path) -> Iterator[None]:
    """CYPHY_HOME is the session's own temporary home meanwhile: the sim nodes, the key
    store (provision keeps the node's key there) and the compiled-firmware cache. The
    plugin never writes to the user's $CYPHY_HOME: a test node named like a real node must
    not overwrite that node's key."""
    old = os.environ.get("CYPHY_HOME")
    os.environ["CYPHY_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CYPHY_HOME", None)
        else:
            os.environ["CYPHY_HOME"] = old


class HilSession:
    """Per test session: where sim nodes live, the board's port, the key, the plot dir.
    Everything it writes goes under `home`, a temporary directory of its own (the user's
    $CYPHY_HOME is never written)."""

    def __init__(self, config: pytest.Config, home: Path, basetemp: Path | None = None) -> None:
        self.config = config
        self.home = home
        self.port = config.getoption("cyphy_port")
        kf = config.getoption("cyphy_key_file")
        if kf:
            self.key_hex = Path(kf).read_text().strip()
        else:
            import secrets

            self.key_hex = secrets.token_hex(32)
        junit = config.getoption("xmlpath", None)
        plots = config.getoption("cyphy_plots")
        if plots:
            self.plots = Path(plots)
        elif junit:
            self.plots = Path(junit).resolve().parent
        else:
            # never the user's rootdir unasked: pytest's own temporary directory
            # (--basetemp, else /tmp/pytest-of-USER/pytest-N), which pytest prunes itself
            self.plots = (basetemp or home) / "cyphy-plots"
        self._started: list[str] = []

    @property
    def hardware(self) -> bool:
        return self.port is not None

    def make(self, name: str, config: dict | None = None, bench: dict | None = None,
             virtual_time: bool = False, baud: int = 0, wifi: bool = False,
             secrets: dict | None = None, user_dir: str | Path | None = None) -> HilNode:
        cfg = _with_name(config or THERMAL_CONFIG, _cfg_name(name))
        wifi_pair = self._wifi() if wifi else None
        with own_home(self.home):
            if self.hardware:
                n = HilNode(self.port, cfg["name"], self.key_hex, cfg)
                n.user_dir = Path(user_dir) if user_dir else None
            else:
                from cyphy.sim import control

                st = control.start(name, baud=baud, home=self.home, virtual_time=virtual_time,
                                   bench=bench if bench is not None else THERMAL_BENCH)
                self._started.append(name)
                n = HilNode(st["port"], cfg["name"], self.key_hex, cfg, sim_name=name,
                            home=self.home, virtual_time=virtual_time,
                            user_dir=Path(user_dir) if user_dir else None)
            n.install(wifi_pair, extra_secrets=secrets)
        return n

    def _wifi(self) -> tuple[str, str]:
        spec = self.config.getoption("cyphy_wifi")
        if spec:
            ssid, _, pw_file = spec.partition(":")
            return ssid, Path(pw_file).read_text().strip()
        if self.hardware:
            pytest.skip("needs Wi-Fi on the board: give --cyphy-wifi SSID:PASSWORD_FILE")
        return "cyphy-sim", "sim-password"  # the sim's loopback "access point" takes any

    def stop_all(self) -> None:
        from cyphy.sim import control

        for name in self._started:
            try:
                control.stop(name, home=self.home)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        self._started.clear()


def _cfg_name(test_name: str) -> str:
    n = re.sub(r"[^A-Za-z0-9_-]", "-", test_name)[:32].strip("-") or "node"
    return n if n[0].isalpha() else "n" + n[:31]


def _with_name(cfg: dict, name: str) -> dict:
    import copy

    c = copy.deepcopy(cfg)
    c.setdefault("name", name)
    return c


@pytest.fixture(scope="session")
def cyphy_hil(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HilSession]:
    """The session's HIL settings (sim home, --cyphy-port, key, plot directory)."""
    s = HilSession(pytestconfig, tmp_path_factory.mktemp("cyphy-hil"), tmp_path_factory.getbasetemp())
    yield s
    s.stop_all()


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    m = request.node.get_closest_marker("cyphy")
    return dict(m.kwargs) if m else {}


def _sim_name(request: pytest.FixtureRequest, suffix: str = "") -> str:
    return (_cfg_name(request.node.name)[:24] + suffix)[:32]


@pytest.fixture
def node(request: pytest.FixtureRequest, cyphy_hil: HilSession) -> Iterator[HilNode]:
    """The node under test: deployed, provisioned (a name, the config, a key) and running
    its loops; a sim node unless --cyphy-port is given. Options: @pytest.mark.cyphy(...)."""
    name = _sim_name(request)
    n = cyphy_hil.make(name, **_options(request))
    yield n
    if n.sim:
        from cyphy.sim import control

        control.stop(n.sim_name, home=cyphy_hil.home)


@pytest.fixture
def nodes(request: pytest.FixtureRequest, cyphy_hil: HilSession) -> Iterator[Callable[..., HilNode]]:
    """A factory: nodes("a", config=..., wifi=True) -> HilNode; several per test (sim only
    for more than one: a board is one node)."""
    made: list[HilNode] = []

    def make(suffix: str, **opts: Any) -> HilNode:
        if cyphy_hil.hardware and made:
            pytest.skip("several nodes need the sim (there is one board)")
        n = cyphy_hil.make(_sim_name(request, "-" + suffix), **{**_options(request), **opts})
        made.append(n)
        return n

    yield make
    from cyphy.sim import control

    for n in made:
        if n.sim:
            control.stop(n.sim_name, home=cyphy_hil.home)


@pytest.fixture
def plant(node: HilNode):
    """The sim's plant behind `node`: true state, inputs and disturbances, sensor faults
    (cyphy.sim.bench_control.SimBench)."""
    if not node.sim:
        pytest.skip("plant: sim only (a real plant has no back door)")
    from cyphy.sim.bench_control import SimBench

    b = SimBench.connect(node.sim_name, node.home)
    yield b
    b.close()


class LinkFaults:
    """Faults on `node`'s links: .serial (drop/corrupt/delay console bytes) and .udp(...),
    a proxy between the host and the node's UDP port."""

    def __init__(self, node: HilNode) -> None:
        from cyphy.sim.bench_control import SerialLinkFaults

        self.node = node
        self.serial = SerialLinkFaults.connect(node.sim_name, node.home)
        self._proxies: list = []

    def udp(self, port: int = 5477, **faults: Any):
        """A UdpFaultProxy to the node's UDP port: talk to proxy.address instead."""
        from cyphy.sim.udp_proxy import UdpFaultProxy

        p = UdpFaultProxy((self.node.ip, port), **faults)
        self._proxies.append(p)
        return p

    def close(self) -> None:
        for p in self._proxies:
            p.close()
        try:
            self.serial.clear()
        finally:
            self.serial.close()


@pytest.fixture
def link(node: HilNode) -> Iterator[LinkFaults]:
    if not node.sim:
        pytest.skip("link: sim only")
    lf = LinkFaults(node)
    yield lf
    lf.close()


class ControlCheck:
    """Step-response assertions for one test; failures draw the response to a PNG."""

    def __init__(self, item: pytest.Item, plots: Path) -> None:
        self.item = item
        self.plots = plots

    def assert_step(self, response, **limits: Any):
        from .assertions import check_step

        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.item.nodeid)
        png = self.plots / f"{safe}-{response.loop or 'loop'}.png"
        return check_step(response, plot=png, **limits)


@pytest.fixture
def control(request: pytest.FixtureRequest, cyphy_hil: HilSession) -> ControlCheck:
    """control.assert_step(response, rise_time_max=..., overshoot_max_pct=...,
    settling_time_max=..., sse_max=..., iae_max=...)."""
    return ControlCheck(request.node, cyphy_hil.plots)
