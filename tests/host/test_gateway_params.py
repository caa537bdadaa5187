"""The block parameters `cyphy gateway` publishes as writable (Blocks/<block>/<param>) are
exactly those the firmware lets SET_PARAM change: a READ of a block lists all its
parameters, so the gateway keeps its own table of the writable ones (BLOCK_PARAMS), held
here to the firmware's (graph.py, each block type's SETTABLE)."""

from __future__ import annotations

from cyphy_node import graph

from cyphy.gateway_device import BLOCK_PARAMS


def test_the_gateways_writable_block_parameters_are_the_firmwares():
    firmware = {kind: set(cls.SETTABLE) for kind, cls in graph.TYPES.items() if cls.SETTABLE}
    assert {kind: set(keys) for kind, keys in BLOCK_PARAMS.items()} == firmware
