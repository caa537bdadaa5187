# cyphy node firmware: control blocks, scheduler and loop runtime (see docs/control.md).
VERSION = "0.1.0"  # the firmware's version, reported in HELLO (docs/protocol.md)
