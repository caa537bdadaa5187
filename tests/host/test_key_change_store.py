"""The key store's two-phase key change (cyphy.keys: stage, commit, confirm) and a session
that finds the node's key among the keys held for its name and confirms it."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

import cyphy
from cyphy import codec as P
from cyphy import keys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_host_auth import FakeNode  # noqa: E402

OLD, NEW, NEWER = "11" * 32, "22" * 32, "33" * 32


@pytest.fixture
def home(cyphy_home, monkeypatch):
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)
    return cyphy_home


def tick() -> None:
    time.sleep(0.02)  # file times: a later step gets a later time


def test_stage_commit_confirm(home):
    keys.save_key("n1", OLD)
    tick()
    keys.stage("n1", NEW)                     # before the node is written
    assert keys.load_key_hexes("n1") == [OLD, NEW] and keys.load_key_hex("n1") == OLD
    assert stat.S_IMODE(keys.pending_path("n1").stat().st_mode) == 0o600
    tick()
    keys.commit("n1", NEW)                    # the node's file verified
    assert keys.load_key_hex("n1") == NEW and keys.load_key_hexes("n1") == [NEW, OLD]
    keys.confirm("n1", OLD)                   # the node still runs the old key: nothing dropped
    assert keys.load_key_hexes("n1") == [NEW, OLD]
    keys.confirm("n1", NEW)                   # it runs the new one: the old one goes
    assert keys.load_key_hexes("n1") == [NEW] and not keys.pending_path("n1").exists()
    assert not [p for p in keys.keys_dir().iterdir() if p.name.endswith(".tmp")]


def test_confirming_a_pending_key_promotes_it_and_keeps_newer_ones(home):
    keys.save_key("n1", OLD)
    tick()
    keys.stage("n1", NEW)     # a provision that died after writing the node
    tick()
    keys.stage("n1", NEWER)   # another one in flight
    keys.confirm("n1", NEW)   # the node booted with NEW
    assert keys.load_key_hexes("n1") == [NEW, NEWER]
    keys.confirm("n1", "44" * 32)  # not a key of the store: nothing changes
    assert keys.load_key_hexes("n1") == [NEW, NEWER]


def test_a_new_name_holds_only_pending_keys(home):
    keys.stage("fresh", NEW)
    assert keys.load_key_hex("fresh") is None and keys.load_key_hexes("fresh") == [NEW]
    keys.confirm("fresh", NEW)
    assert keys.load_key_hex("fresh") == NEW and keys.load_key_hexes("fresh") == [NEW]


def test_bad_names_and_lines(home):
    assert keys.load_key_hexes("9bad") == [] and keys.load_key_hexes("../x") == []
    keys.save_key("n1", OLD)
    keys.pending_path("n1").write_text("zz 1\n" + NEW + " 5\nnonsense\n")
    assert keys.load_key_hexes("n1") == [OLD, NEW]
    with pytest.raises(keys.KeyStoreError, match="hex"):
        keys.stage("n1", "not hex")


def test_a_session_finds_the_pending_key_and_confirms_it(home):
    keys.save_key("oven1", OLD)
    tick()
    keys.stage("oven1", NEW)
    with FakeNode("oven1", key=P.key_from_hex(NEW)) as fake:
        with cyphy.connect(fake.url) as n:
            assert n.hello.authenticated and n.name == "oven1"
    assert keys.load_key_hexes("oven1") == [NEW]
    with FakeNode("oven1", key=P.key_from_hex(OLD)) as fake:
        with pytest.raises(cyphy.api.ProtocolError, match="does not verify"):
            cyphy.connect(fake.url)


def test_a_session_with_the_old_key_keeps_both(home):
    keys.save_key("oven1", OLD)
    tick()
    keys.stage("oven1", NEW)
    with FakeNode("oven1", key=P.key_from_hex(OLD)) as fake, cyphy.connect(fake.url) as n:
        assert n.hello.authenticated
    assert keys.load_key_hexes("oven1") == [OLD, NEW]
    # a key given explicitly is used alone and confirms nothing in the store
    with FakeNode("oven1", key=P.key_from_hex(NEW)) as fake, cyphy.connect(fake.url, key=NEW):
        pass
    assert keys.load_key_hexes("oven1") == [OLD, NEW]
    assert os.listdir(keys.keys_dir()) and NEW not in "".join(os.listdir(keys.keys_dir()))
