# cyphy node boot (runs on every boot, before main.py; a soft reset from the raw REPL, as
# mpremote and ampy do, runs only this file).
# Every output declared in /config.json goes to its fail-safe value first, so a node is
# safe from the earliest moment of every boot, whether or not main.py runs its loops.
def _failsafe_outputs():
    try:
        from cyphy_node import config
        from cyphy_node.io import Output
        from board import Board

        cfg = config.load("/config.json")
        board = Board()
        return [Output(c, board) for c in cfg.channels if c.kind in ("pwm", "dac", "dout")]
    except Exception as e:  # no config, or an invalid one: main.py reports it
        print("cyphy: boot: outputs not set (%s)" % (e,))
        return []


failsafe_outputs = _failsafe_outputs()
