"""serfec (cyphy_node/serfec.py): frames as repeated blocks survive byte loss and change.
The sim tests (tests/sim/test_serial_noise.py) run it end to end; this checks the codec."""

from __future__ import annotations

import random

import pytest

from cyphy_node import serfec as F


def wire(frame: bytes, fid: int) -> bytes:
    buf = bytearray(F.round_size(len(frame)))
    n = F.encode_round(frame, len(frame), buf, fid, bytearray(6))
    assert n == len(buf)
    return bytes(buf) * F.ROUNDS


def receive(asm: F.Assembler, data: bytes) -> list[bytes]:
    out = []
    for chunk in data.split(b"\x00"):
        if chunk:
            f = asm.block(chunk, len(chunk))
            if f is not None:
                out.append(f)
    return out


def noisy(data: bytes, rng: random.Random, drop: float, change: float) -> bytes:
    out = bytearray()
    for b in data:
        r = rng.random()
        if r < drop:
            continue
        out.append(b ^ rng.randrange(1, 256) if r < drop + change else b)
    return bytes(out)


@pytest.mark.parametrize("n", [9, 10, 11, 24, 100, 254])
def test_a_clean_line_delivers_each_frame_once(n):
    frame = random.Random(n).randbytes(n)
    assert receive(F.Assembler(), wire(frame, 1)) == [frame]
    assert all(len(c) == F.CHUNK for c in wire(frame, 1).split(b"\x00") if c)


def test_frames_in_a_row_and_the_frame_number_wrapping():
    rng = random.Random(3)
    frames = [rng.randbytes(rng.randrange(9, 60)) for _ in range(10)]
    asm = F.Assembler()
    got = []
    for i, f in enumerate(frames):
        got += receive(asm, wire(f, i & 3))
    assert got == frames


def test_5_percent_loss_and_5_percent_change_per_byte():
    rng = random.Random(7)
    asm = F.Assembler()
    sent = ok = wrong = 0
    for i in range(300):
        frame = rng.randbytes(rng.choice((20, 30, 60)))
        got = receive(asm, noisy(wire(frame, i & 3), rng, 0.05, 0.05))
        sent += 1
        ok += got == [frame]
        wrong += sum(1 for g in got if g != frame)
    assert ok >= 0.95 * sent, ok  # the rest is sent again (a request retried)
    assert wrong <= 3  # a block a CRC-8 let through: the frame's own tag rejects it


def test_garbage_is_never_a_block():
    rng = random.Random(11)
    asm = F.Assembler()
    for _ in range(20000):
        chunk = bytes(rng.randrange(1, 256) for _ in range(F.CHUNK))
        assert asm.block(chunk, len(chunk)) is None
    assert asm.bad > 19900
