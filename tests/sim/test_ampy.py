"""adafruit-ampy, run as a subprocess, against a sim node."""

from __future__ import annotations

from cyphy.flashimage import read_vfs
from helpers import ampy

PAYLOAD = bytes(range(256)) * 4


def test_ls_put_get_mkdir(sim_node, tmp_path):
    port = sim_node.port
    assert ampy(port, "ls").split() == ["/boot.py"]
    src = tmp_path / "payload.bin"
    src.write_bytes(PAYLOAD)
    ampy(port, "mkdir", "/lib")
    ampy(port, "put", src, "/lib/payload.bin")
    assert ampy(port, "ls").split() == ["/boot.py", "/lib"]
    assert ampy(port, "ls", "/lib").split() == ["/lib/payload.bin"]
    back = tmp_path / "back.bin"
    ampy(port, "get", "/lib/payload.bin", back)
    assert back.read_bytes() == PAYLOAD
    assert read_vfs(sim_node.node.image)["/lib/payload.bin"] == PAYLOAD


def test_run(sim_node, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint(sys.platform, sum(range(10)))\n")
    assert ampy(sim_node.port, "run", script) == "esp32 45\n"
