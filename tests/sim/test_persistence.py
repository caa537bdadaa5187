"""Files written by mpremote and by ampy live in the node's flash: they survive power cycles and kills."""

from __future__ import annotations

import json
import os
import signal
import time

from cyphy.flashimage import read_vfs
from helpers import ampy, cyphy, mpremote

FILES = {
    "/via_mpremote.bin": bytes(range(256)) * 3,
    "/via_ampy.txt": b"written by ampy\r\nline two\n",
}


def write_files(port: str, tmp_path) -> None:
    for name, data in FILES.items():
        (tmp_path / name[1:]).write_bytes(data)
    mpremote(port, "fs", "cp", tmp_path / "via_mpremote.bin", ":via_mpremote.bin")
    ampy(port, "put", tmp_path / "via_ampy.txt", "/via_ampy.txt")


def check_files(port: str, image, tmp_path) -> None:
    on_flash = read_vfs(image)
    for name, data in FILES.items():
        assert on_flash.get(name) == data, f"{name} not in the flash image"
    back = tmp_path / "back"
    back.mkdir(exist_ok=True)
    mpremote(port, "fs", "cp", ":via_ampy.txt", back / "a")  # each tool reads the other's file
    ampy(port, "get", "/via_mpremote.bin", back / "m")
    assert (back / "a").read_bytes() == FILES["/via_ampy.txt"]
    assert (back / "m").read_bytes() == FILES["/via_mpremote.bin"]


def test_files_survive_stop_and_start(sim_node, tmp_path):
    write_files(sim_node.port, tmp_path)
    sim_node.restart(baud=0)
    check_files(sim_node.port, sim_node.node.image, tmp_path)


def test_files_survive_kill_9_of_the_supervisor(sim_node, tmp_path):
    write_files(sim_node.port, tmp_path)
    [row] = json.loads(cyphy("sim", "list", "--json").stdout)
    pid = json.loads(sim_node.node.state_path.read_text())["pid"]
    assert row["running"] and row["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while json.loads(cyphy("sim", "list", "--json").stdout)[0]["running"]:
        assert time.monotonic() < deadline, "node still listed as running after kill -9 of its supervisor"
        time.sleep(0.05)
    port = cyphy("sim", "start", sim_node.name, "--baud", "0").stdout.splitlines()[-1]
    assert port == sim_node.port
    check_files(port, sim_node.node.image, tmp_path)
