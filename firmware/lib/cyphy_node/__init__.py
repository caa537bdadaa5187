# cyphy node firmware: control blocks, scheduler and loop runtime (see docs/control.md).
