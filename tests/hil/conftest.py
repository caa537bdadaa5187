"""The example HIL suite runs on the sim by default, and on a board with
`pytest tests/hil --cyphy-port /dev/ttyUSB0` (docs/hil.md).

pytest-embedded's `dut` opens its `port` fixture: pointing that at the node under test
lets a test use both (the node set up by cyphy, driven by pytest-embedded's expect())."""

import pytest


@pytest.fixture
def port(node):
    return node.port
