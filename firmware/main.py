# cyphy node firmware entry point (runs after boot.py on every reset).
#
# Loads /config.json, builds the board (/lib/board.py: boards/esp32/board.py or
# boards/sim/board.py deployed under that name) and starts the node's loops in the
# background; `node` is then available in the REPL:
#     node.state(), node.set("oven.setpoint", 60.0), node.stats(), node.faults(), node.stop()
# An invalid config leaves every output untouched (at its reset state), prints the message
# naming the bad field, keeps it in /config_error.txt and returns: the REPL stays usable.
ERROR_FILE = "/config_error.txt"


def _keep_error(msg):
    try:
        with open(ERROR_FILE, "w") as f:
            f.write(msg + "\n")
    except OSError:
        pass


def _boot():
    from cyphy_node import config
    try:
        cfg = config.load("/config.json")
    except config.ConfigError as e:
        msg = "cyphy: config error: %s" % (e,)
        print(msg)
        _keep_error(msg)
        return None
    try:
        import os
        os.remove(ERROR_FILE)
    except OSError:
        pass
    import gc
    from board import Board
    from cyphy_node.node import Node
    gc.collect()  # the node's buffers want contiguous heap (~150 KB free on an ESP32)
    b = Board()
    try:
        n = Node(cfg, b)
    except ValueError as e:          # a pin the board cannot do, a gain out of range...
        msg = "cyphy: config error: %s" % (e,)
        print(msg)
        _keep_error(msg)
        return None
    n.start()
    print("cyphy: node %s running %d loop(s); `node` in the REPL" % (cfg.name, len(n.loops)))
    return n


node = _boot()
