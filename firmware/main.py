# cyphy node firmware entry point (runs after boot.py on every reset). The application is
# cyphy_node/app.py (compiled): it loads /config.json, builds the board and starts the
# loops in the background; `node` is then available in the REPL:
#     node.state(), node.set("oven.setpoint", 60.0), node.stats(), node.faults(), node.stop()
from cyphy_node.app import boot

node = boot()
