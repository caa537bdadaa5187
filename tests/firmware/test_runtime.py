"""The firmware test runner itself: scripts really run on MicroPython, and can fail."""

import pytest


def test_runs_on_micropython(mpy):
    assert mpy("import sys; print(sys.implementation.name)") == "micropython\n"


def test_heap_lock_turns_allocation_into_memoryerror(mpy):
    out = mpy(
        "import micropython\n"
        "micropython.heap_lock()\n"
        "try:\n"
        "    x = [1, 2, 3]\n"
        "    r = 'allocated'\n"
        "except MemoryError:\n"
        "    r = 'MemoryError'\n"
        "micropython.heap_unlock()\n"
        "print(r)\n"
    )
    assert out == "MemoryError\n"


def test_a_failing_script_fails_the_test(mpy):
    with pytest.raises(pytest.fail.Exception):
        mpy("raise ValueError('boom')")
