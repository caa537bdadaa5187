"""firmware/manifest.py, the one list of the firmware tree: cyphy.firmware reads it (its own
small evaluator of MicroPython's manifest functions), and MicroPython's tools freeze from it.

MicroPython's own tools/manifestfile.py is not part of this project; set MICROPYTHON_DIR to
a MicroPython checkout to also run the manifest through it (test_micropython_manifestfile)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from cyphy import firmware
from cyphy.firmware import FirmwareError, read_manifest

REPO = firmware.REPO
MANIFEST = firmware.MANIFEST


def cyphy_node_sources() -> list[str]:
    return sorted(p.name for p in (REPO / "firmware/lib/cyphy_node").glob("*.py"))


def expected_tree(target: str) -> list[tuple[str, str, bool]]:
    """The tree as it was before the manifest, written out independently:
    (source in the repository, node path, compiled)."""
    out = [(f"firmware/lib/cyphy_node/{n}", f"/lib/cyphy_node/{n[:-3]}.mpy", True)
           for n in cyphy_node_sources()]
    out += [("boards/hal.py", "/lib/boards/hal.mpy", True),
            ("boards/esp32/board.py", "/lib/boards/esp32/board.mpy", True),
            ("boards/esp32/buses.py", "/lib/boards/esp32/buses.mpy", True),
            ("boards/esp32/pins.py", "/lib/boards/esp32/pins.mpy", True),
            ("boards/esp32/chip_esp32.py", "/lib/boards/esp32/chip_esp32.mpy", True),
            ("boards/esp32/chip_esp32s3.py", "/lib/boards/esp32/chip_esp32s3.mpy", True),
            ("boards/esp32/chip_esp32c3.py", "/lib/boards/esp32/chip_esp32c3.mpy", True),
            ("boards/esp32/wifi.py", "/lib/boards/esp32/wifi.mpy", True)]
    if target == "sim":
        out.append(("boards/sim/board.py", "/lib/boards/sim/board.mpy", True))
    out.append((f"boards/{target}/board.py", "/lib/board.mpy", True))
    out += [("firmware/boot.py", "/boot.py", False), ("firmware/main.py", "/main.py", False)]
    return out


@pytest.mark.parametrize("target", firmware.TARGETS)
def test_the_manifest_is_the_firmware_tree(target):
    m = read_manifest(target)
    tree = firmware.files(target)
    # every module of the manifest goes to /lib/<its frozen path>, compiled, in order;
    # then the manifest's FILESYSTEM_SCRIPTS, as source, to the root
    assert [(f.src, f.dst, f.compile) for f in tree] == (
        [(e.src, "/lib/" + e.target[:-3] + ".mpy", True) for e in m.modules] +
        [(s, "/" + s.name, False) for s in m.scripts])
    assert [(f.name, f.dst, f.compile) for f in tree] == expected_tree(target)
    assert all(f.src.is_file() for f in tree), [f.name for f in tree if not f.src.is_file()]
    assert tree[-1].dst == "/main.py"
    assert sorted(f.dst for f in tree if not f.compile) == sorted(firmware.SOURCE_FILES)
    assert firmware.source_pairs(target) == [
        (f.src, f.dst[:-4] + ".py" if f.compile else f.dst) for f in tree]
    # what a deploy may delete is what the manifest's packages fill
    managed = tuple(d + "/" for d in firmware.MANAGED_DIRS)
    assert all(f.dst.startswith(managed) for f in tree if f.dst.count("/") > 2)


def test_every_firmware_module_is_in_the_manifest():
    listed = {e.target for e in read_manifest("esp32").modules}
    missing = [n for n in cyphy_node_sources() if f"cyphy_node/{n}" not in listed]
    assert not missing, (
        f"firmware/lib/cyphy_node has modules firmware/manifest.py does not list: {missing}. "
        f"A module not in the manifest is neither deployed nor frozen: add "
        f"{', '.join(repr(n) for n in missing)} to package(\"cyphy_node\", files=[...]) there.")
    board_modules = [p.relative_to(REPO).as_posix() for p in (REPO / "boards").glob("*.py")]
    board_modules += [p.relative_to(REPO).as_posix() for p in (REPO / "boards/esp32").glob("*.py")]
    missing = [m for m in board_modules if m[:-3] + ".py" not in listed]
    assert not missing, (f"boards/ has modules firmware/manifest.py does not list: {missing}; "
                         f"add them to package(\"boards\", files=[...]) there.")
    assert "boards/sim/board.py" in {e.target for e in read_manifest("sim").modules}


def test_targets_differ_only_in_the_board():
    esp, sim = (read_manifest(t).modules for t in ("esp32", "sim"))
    by_target = lambda ms: {e.target: e.src.relative_to(REPO).as_posix() for e in ms}  # noqa: E731
    e, s = by_target(esp), by_target(sim)
    assert e["board.py"] == "boards/esp32/board.py" and s["board.py"] == "boards/sim/board.py"
    assert set(s) - set(e) == {"boards/sim/board.py"} and set(e) <= set(s)
    assert {k: v for k, v in s.items() if k != "board.py"}.items() >= {
        k: v for k, v in e.items() if k != "board.py"}.items()


def test_the_manifest_reader_follows_manifestfile_rules(tmp_path):
    """Paths relative to the manifest being run, include() of a directory, options with
    defaults, each manifest once, package() without files walks the package."""
    (tmp_path / "lib/pkg/sub").mkdir(parents=True)
    for p in ("lib/pkg/__init__.py", "lib/pkg/sub/b.py", "lib/pkg/a.py", "lib/pkg/notes.txt",
              "lib/single.py", "dep/mod.py"):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text("x = 1\n")
    (tmp_path / "dep/manifest.py").write_text(
        "options.defaults(flavour='plain')\n"
        "module('mod.py')\n"
        "if options.flavour == 'extra':\n    module('single.py', base_path='../lib')\n")
    (tmp_path / "manifest.py").write_text(
        "metadata(description='t')\n"
        "package('pkg', base_path='lib')\n"
        "include('dep', flavour=options.flavour)\n"
        "include('dep/manifest.py')\n"          # already run: nothing more
        "FILESYSTEM_SCRIPTS = ('lib/single.py',)\n")
    m = read_manifest("esp32", tmp_path / "manifest.py")
    assert [e.target for e in m.modules] == ["pkg/__init__.py", "pkg/a.py", "pkg/sub/b.py", "mod.py"]
    assert m.modules[-1].src == tmp_path / "dep/mod.py"
    assert m.scripts == [tmp_path / "lib/single.py"]
    assert m.metadata == {"description": "t"}
    (tmp_path / "manifest.py").write_text("include('dep', flavour='extra')\n")
    assert [e.target for e in read_manifest("esp32", tmp_path / "manifest.py").modules] == [
        "mod.py", "single.py"]


@pytest.mark.parametrize("body, message", [
    ("freeze('lib')", "freeze() is a manifest function cyphy.firmware does not read"),
    ("require('dht')", "require() is a manifest function cyphy.firmware does not read"),
    ("include('$(PORT_DIR)/boards/manifest.py')", "$(PORT_DIR) is only defined in a MicroPython build"),
    ("module('a.py')\nmodule('a.py')", "a.py is listed twice"),
    ("module('a.mpy')", "module must be a .py file"),
    ("package('p', files='a.py')", "files must be a list"),
    ("include('nowhere.py')", "cannot read the manifest"),
    ("module(", "manifest.py:1:"),
    ("raise ValueError('bad option')", "ValueError: bad option"),
])
def test_what_the_reader_cannot_read_is_a_clear_error(tmp_path, body, message):
    (tmp_path / "manifest.py").write_text(body + "\n")
    with pytest.raises(FirmwareError) as e:
        read_manifest("esp32", tmp_path / "manifest.py")
    assert message in str(e.value)
    assert "manifest.py" in str(e.value)


def test_an_unknown_target_is_refused():
    with pytest.raises(FirmwareError, match="unknown target 'esp8266'"):
        firmware.files("esp8266")


def test_for_esp32_the_manifest_includes_the_port_manifest():
    """Run as FROZEN_MANIFEST (options at their defaults) it first includes the ESP32 port's
    manifest, whose frozen _boot.py mounts the filesystem; cyphy.firmware turns that off."""
    with pytest.raises(FirmwareError, match=r"\$\(PORT_DIR\)"):
        firmware._ManifestReader().include(str(MANIFEST))
    assert read_manifest("esp32").modules


@pytest.mark.skipif(not os.environ.get("MICROPYTHON_DIR"),
                    reason="set MICROPYTHON_DIR to a MicroPython checkout to run its manifestfile.py")
@pytest.mark.parametrize("target", firmware.TARGETS)
def test_micropython_manifestfile(target):
    """MicroPython's own tools/manifestfile.py lists the same modules, frozen as bytecode."""
    path = Path(os.environ["MICROPYTHON_DIR"]) / "tools" / "manifestfile.py"
    spec = importlib.util.spec_from_file_location("_mp_manifestfile", path)
    mf = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mf
    try:
        spec.loader.exec_module(mf)
        m = mf.ManifestFile(mf.MODE_FREEZE, {"MPY_LIB_DIR": None})
        m.include(str(MANIFEST), target=target, port_manifest=False)
        got = [(Path(f.full_path), f.target_path) for f in m.files()]
        assert all(f.kind == mf.KIND_FREEZE_AS_MPY for f in m.files())
    finally:
        del sys.modules[spec.name]
    assert got == [(e.src, e.target) for e in read_manifest(target).modules]
