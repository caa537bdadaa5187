# cyphy node: boot.py has started the node on this boot (`node` in the REPL:
# node.state(), node.set("oven.setpoint", 60.0), node.stats(), node.faults(), node.stop()).
# This file is for your own application code; it runs after boot.py on a hard reset and
# on a soft reset in the friendly REPL, not after the raw REPL's soft reset.
