"""cyphy.rawrepl, the one raw-REPL client (on mpremote's transport), against a sim node over
its PTY; and the file receiver (_cyrx) leaving on its own when the host goes quiet or says
stop (issue 14)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from cyphy.device import RX_SRC, Stream, encode
from cyphy.rawrepl import Interrupted, NodeError, RawRepl

REPO = Path(__file__).resolve().parents[2]


def test_exec_errors_files_and_back_to_the_friendly_prompt(sim_node):
    with RawRepl(sim_node.port) as repl:
        repl.enter()
        assert repl.exec("print(6 * 7)") == "42\r\n"
        assert repl.eval("[1, 'a']") == [1, "a"]
        with pytest.raises(NodeError) as e:
            repl.exec("print('before')\n1/0")
        assert "ZeroDivisionError" in e.value.node_error and e.value.out == "before\r\n"
        assert str(e.value) == f"{sim_node.port}: the node raised: ZeroDivisionError: divide by zero"
        repl.exec("f = open('/r.bin', 'wb'); f.write(bytes(range(256)) * 3); f.close()")
        assert repl.read_file("/r.bin") == bytes(range(256)) * 3
        assert repl.read_file("/no/such") is None
        assert repl.exec("print('_f' in globals(), '_b' in globals())") == "False False\r\n"
        assert repl.leave(wait=True).endswith(b">>> ")


def test_ctrl_c_on_the_host_stops_the_node_and_the_repl_answers_at_once(sim_node):
    with RawRepl(sim_node.port) as repl:
        repl.enter()
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(Interrupted) as e:
            repl.exec("import time\nprint('started')\ntime.sleep(30)")
        assert time.monotonic() - t0 < 2.0
        assert e.value.clean
        assert repl.exec("print(1)") == "1\r\n"


class Quiet(Exception):
    pass


def start_receiver(repl: RawRepl, path: str, data: bytes) -> Stream:
    """_cyrx(path, ...) started on the node; the host side of its stream."""
    pieces = encode(data, False)
    repl.exec(RX_SRC)
    repl.start(f"_cyrx({path!r}, {len(pieces)})")
    return Stream(repl.serial, pieces, len(data), None)


def test_the_receiver_leaves_on_its_own_when_the_host_goes_quiet(sim_nodes):
    n = sim_nodes("quiet", baud=115200)
    with RawRepl(n.port) as repl:
        repl.enter()
        stream = start_receiver(repl, "/q.tmp", os.urandom(6000))

        def go_quiet(done: int) -> None:  # the host stops mid-piece (as if killed)
            if done > 500:
                raise Quiet

        stream.progress = go_quiet
        with pytest.raises(Quiet):
            stream.pump()
        t0 = time.monotonic()
        out, err = repl.finish(timeout=10)
        took = time.monotonic() - t0
        assert b"OSError" in err and b"110" in err, err
        assert took < 2.0, f"the receiver waited {took:.1f} s for a host that went quiet"
        assert repl.exec("print(1)") == "1\r\n"


@pytest.mark.parametrize("where", ["before the first piece", "mid-piece"])
def test_the_receiver_stops_on_the_stop_header(sim_nodes, where):
    n = sim_nodes("stop", baud=115200)
    with RawRepl(n.port) as repl:
        repl.enter()
        stream = start_receiver(repl, "/s.tmp", os.urandom(5000))
        t0 = time.monotonic()
        if where == "mid-piece":
            def ctrl_c(done: int) -> None:
                if done > 300:
                    raise KeyboardInterrupt

            stream.progress = ctrl_c
            with pytest.raises(KeyboardInterrupt):
                stream.pump()  # completes the piece with zeros and sends STOP
        else:
            stream.stop()
        out, err = repl.finish(timeout=10)
        assert b"ValueError: transfer stopped" in err, err
        assert time.monotonic() - t0 < 1.5
        assert repl.exec("print(len(open('/s.tmp', 'rb').read()) <= 2048)") == "True\r\n"


def test_no_other_module_drives_the_raw_repl():
    """Only cyphy.rawrepl (through mpremote) enters the raw REPL or pastes code: no
    Ctrl-A or raw-paste bytes written anywhere else in the host package, the bench or the
    console tests' client."""
    files = [*(REPO / "host" / "cyphy").rglob("*.py"), *(REPO / "bench").glob("*.py"),
             REPO / "tests" / "sim" / "serial_console.py"]
    raw = re.compile(r"""b["'][^"']*\\x0[15]""")
    offenders = []
    for f in files:
        if f.name == "rawrepl.py":
            continue
        for k, line in enumerate(f.read_text().splitlines(), 1):
            if raw.search(line) and "write" in line:
                offenders.append(f"{f.relative_to(REPO)}:{k}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
