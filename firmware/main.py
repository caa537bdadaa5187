# cyphy node firmware entry point (runs after boot.py on every reset).
# The control loop, comms endpoint and safety layer arrive with the next issues; until
# then a node only announces itself and leaves the REPL free.
import os
import binascii
import machine

print("cyphy node on %s, id %s" % (os.uname().machine, binascii.hexlify(machine.unique_id()).decode()))
