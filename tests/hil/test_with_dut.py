"""pytest-embedded's dut on the node under test: the same port, the loops running."""

import pytest


@pytest.mark.parametrize("embedded_services", ["serial"], indirect=True)
def test_dut_drives_the_repl_of_a_running_node(node, dut):
    dut.write("\r")
    dut.expect_exact(">>> ")
    # the loops start as the boot ends, and a 10 Hz loop's first tick comes a period later
    dut.write("import time; time.sleep_ms(300); print('ticks', node.loop('oven').ticks > 0, node.running())\r")
    dut.expect_exact("ticks True True")
