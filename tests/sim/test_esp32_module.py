"""The sim's `esp32` module: esp32.Partition over the node's flash image and its partition
table, esp32.NVS persistent in the nvs partition (only what was committed), errors as
MicroPython's ESP32 port raises them (ports/esp32: esp32_partition.c, esp32_nvs.c,
mphalport.c check_esp_err)."""

from __future__ import annotations

import json
import subprocess

from cyphy import flashimage
from helpers import tool
from serial_console import Console

PARTITIONS = r"""
import esp32, json
out = {}
def err(f, *a):
    try:
        f(*a)
    except OSError as e:
        return list(e.args)
    except ValueError as e:
        return 'ValueError'
out['apps'] = [p.info() for p in esp32.Partition.find()]
out['data'] = [p.info() for p in esp32.Partition.find(esp32.Partition.TYPE_DATA)]
out['nvs'] = [p.info() for p in esp32.Partition.find(type=1, subtype=2)]
out['running'] = esp32.Partition(esp32.Partition.RUNNING).info()
out['boot'] = esp32.Partition(esp32.Partition.BOOT).info()
out['byname'] = esp32.Partition('vfs').info()
out['missing'] = err(esp32.Partition, 'nope')
out['badid'] = err(esp32.Partition, 7)
run = esp32.Partition(esp32.Partition.RUNNING)
out['next'] = err(run.get_next_update)
out['set_boot'] = err(run.set_boot)
out['rollback'] = err(esp32.Partition.mark_app_valid_cancel_rollback)
p = esp32.Partition('phy_init')
out['ioctl'] = [p.ioctl(4, 0), p.ioctl(5, 0)]
p.ioctl(6, 0)
b = bytearray(16)
p.readblocks(0, b)
out['erased'] = bytes(b) == b'\xff' * 16
p.writeblocks(0, b'cyphy-partition', 100)
p.writeblocks(0, b'\x00', 100)             # NOR: programming only clears bits
p.readblocks(0, b, 100)
out['written'] = bytes(b[:15]).decode()
out['beyond'] = err(p.readblocks, 1, b)
out['nvs_type'] = 'temperature' if 0 < esp32.raw_temperature() < 256 else 'no'
out['mcu_temp'] = hasattr(esp32, 'mcu_temperature')
print(json.dumps(out))
"""


def test_partitions_are_the_images(sim_node):
    with Console(sim_node.port) as con:
        con.raw()
        r = json.loads(con.run(PARTITIONS))
    table = flashimage.read_partition_table(sim_node.node.image)
    rows = [[p.type, p.subtype, p.offset, p.size, p.name, False] for p in table]
    assert r["apps"] == [row for row in rows if row[0] == 0] == [[0, 0, 0x10000, 0x1F0000, "factory", False]]
    assert r["data"] == [row for row in rows if row[0] == 1]
    assert r["nvs"] == [[1, 2, 0x9000, 0x6000, "nvs", False]]
    assert r["running"] == r["boot"] == r["apps"][0]
    assert r["byname"] == [1, 0x81, 0x200000, 0x200000, "vfs", False]
    assert r["missing"] == [2] and r["badid"] == "ValueError"  # ENOENT, as esp32_partition_new(NULL)
    assert r["next"] == [2]                                     # no OTA slots in this table
    assert r["set_boot"] == [-0x105, "ESP_ERR_NOT_FOUND"]       # no otadata
    assert r["rollback"] == [1, "ESP_FAIL"]                     # "Running firmware is factory"
    assert r["ioctl"] == [1, 4096] and r["erased"]
    assert r["written"] == "\x00yphy-partition"
    assert r["beyond"] == [-0x104, "ESP_ERR_INVALID_SIZE"]
    assert r["nvs_type"] == "temperature" and r["mcu_temp"] is False  # plain ESP32: raw_temperature only
    with open(sim_node.node.image, "rb") as f:
        f.seek(0xF000 + 100)
        assert f.read(15) == b"\x00yphy-partition"[:15]


NVS_SET = r"""
import esp32
n = esp32.NVS('cyphy')
n.set_i32('boots', 41)
n.set_blob('key', b'\x01\x02secret')
n.commit()
n.set_i32('boots', 42)          # seen now, lost at reset: never committed
print(n.get_i32('boots'))
o = esp32.NVS('other')
o.set_i32('x', -7)
o.commit()
o.erase_key('x')                 # not committed either
"""

NVS_GET = r"""
import esp32, json
def err(f, *a):
    try:
        return f(*a)
    except OSError as e:
        return list(e.args)
    except OverflowError:
        return 'OverflowError'
n = esp32.NVS('cyphy')
buf = bytearray(16)
k = n.get_blob('key', buf)
small = bytearray(2)
print(json.dumps([n.get_i32('boots'), bytes(buf[:k]).decode(), err(n.get_i32, 'missing'),
                  err(n.get_i32, 'key'), err(n.get_blob, 'key', small), err(n.erase_key, 'missing'),
                  esp32.NVS('other').get_i32('x'), err(esp32.NVS('cyphy').get_i32, 'x'),
                  err(n.set_i32, 'k' * 16, 1), err(n.set_i32, 'big', 1 << 31), repr(n)]))
"""


def test_nvs_keeps_only_what_was_committed_across_resets(sim_node):
    with Console(sim_node.port) as con:
        con.raw()
        assert con.run(NVS_SET).strip() == "42"
        con.write(b"import machine\nmachine.reset()\x04")  # hard reset: a new node process
        con.read_until(b"OK")
        con.raw()  # the new process's raw REPL
        r = json.loads(con.run(NVS_GET))
    assert r[0] == 41 and r[1] == "\x01\x02secret"
    not_found = [-0x1102, "ESP_ERR_NVS_NOT_FOUND"]
    assert r[2] == not_found and r[3] == not_found          # missing, or stored as another type
    assert r[4] == [-0x110C, "ESP_ERR_NVS_INVALID_LENGTH"]  # buffer too small
    assert r[5] == not_found
    assert r[6] == -7                                       # the erase was never committed
    assert r[7] == not_found                                # namespaces are separate
    assert r[8] == [-0x1109, "ESP_ERR_NVS_KEY_TOO_LONG"]
    assert r[9] == "OverflowError"
    assert r[10] == "<NVS namespace>"
    # the values live in the nvs partition of the image (our own record format)
    with open(sim_node.node.image, "rb") as f:
        f.seek(0x9000)
        nvs = f.read(0x6000)
    assert b"CYNV" in nvs and b"secret" in nvs


def test_esp32_is_the_sims_alone():
    """The Unix port (the firmware tests' MicroPython) has no esp32 module: only the sim
    ROM registers one."""
    p = subprocess.run([tool("micropython"), "-c", "import esp32"], capture_output=True, text=True)
    assert p.returncode != 0 and "esp32" in p.stdout + p.stderr
