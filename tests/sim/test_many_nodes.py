"""Several sim nodes at once are separate boards: own port, identity and flash."""

from __future__ import annotations

import json

from cyphy.flashimage import read_vfs
from helpers import cyphy, mpremote

UID = "import machine, binascii; print(binascii.hexlify(machine.unique_id()).decode())"


def test_three_nodes_are_independent(sim_nodes):
    nodes = [sim_nodes(name, baud=0) for name in ("n1", "n2", "n3")]
    ports = {n.port for n in nodes}
    assert len(ports) == 3
    assert len({n.state["pts"] for n in nodes}) == 3  # distinct PTYs, not just distinct symlinks
    uids = {mpremote(n.port, "exec", UID).strip() for n in nodes}
    assert len(uids) == 3 and uids == {n.node.config()["mac"] for n in nodes}
    images = {n.node.image for n in nodes}
    assert len(images) == 3

    mpremote(nodes[0].port, "exec", "with open('only_n1.txt', 'w') as f: f.write('n1')")
    for n in nodes:
        present = "only_n1.txt" in mpremote(n.port, "fs", "ls", ":")
        assert present == (n is nodes[0]), n.name
        assert ("/only_n1.txt" in read_vfs(n.node.image)) == (n is nodes[0]), n.name

    rows = {r["name"]: r for r in json.loads(cyphy("sim", "list", "--json").stdout)}
    assert sorted(rows) == ["n1", "n2", "n3"]
    for n in nodes:
        assert rows[n.name]["running"] is True
        assert rows[n.name]["port"] == n.port and rows[n.name]["image"] == str(n.node.image)
