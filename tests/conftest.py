"""Shared fixtures: sim nodes in a throwaway CYPHY_HOME."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "sim"))
from helpers import power_on  # noqa: E402

from cyphy.sim import control
from cyphy.sim.nodes import Node

@dataclass
class SimNode:
    name: str
    port: str
    home: Path
    state: dict

    @property
    def node(self) -> Node:
        return Node.named(self.name, self.home)

    def stop(self) -> None:
        control.stop(self.name, home=self.home)

    def restart(self, baud: int = 0) -> None:
        self.stop()
        self.state = control.start(self.name, baud=baud, home=self.home)
        self.port = self.state["port"]


@pytest.fixture
def cyphy_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cyphy-home"
    home.mkdir()
    monkeypatch.setenv("CYPHY_HOME", str(home))
    return home


@pytest.fixture
def sim_nodes(cyphy_home: Path) -> Iterator:
    """Factory: sim_nodes("a", baud=0) starts a node; all are stopped after the test."""
    started: list[SimNode] = []

    def start(name: str = "node", baud: int = 0, files: dict[str, bytes] | None = None,
              **kw) -> SimNode:
        # an ESP32 with PSRAM unless the test asks for a WROOM (ram="wroom"), the sim's
        # default: most tests are about something else than RAM (docs/boards.md, "WROOM nodes")
        kw.setdefault("ram", "psram")
        st = power_on(name, cyphy_home, files, baud=baud, **kw)  # files: on its flash
        n = SimNode(name, st["port"], cyphy_home, st)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def sim_node(sim_nodes) -> SimNode:
    """One running sim node without line-rate emulation (fast)."""
    return sim_nodes("node", baud=0)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # The longest tests (marked slow: 25 s and more) first: with -n workers, one left to the
    # end runs alone while the others wait for it.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
