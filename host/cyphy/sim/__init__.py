"""The sim board: the node firmware on the MicroPython Unix port, behind a serial port."""
