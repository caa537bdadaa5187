# cyphy node boot: runs on every boot, soft resets included. mpremote and ampy soft-reset
# into the raw REPL, where main.py does not run, and on ESP32 the watchdog keeps running
# across a soft reset (ports/esp32/main.c stops timers and PWM, never the task watchdog).
# So the node starts here: every output goes to its fail-safe value first (Node() writes
# them before anything else), then the loops run in the background and feed the watchdog;
# the REPL (and mpremote, ampy, cyphy deploy) work meanwhile. `node` is the REPL's handle.
# An invalid config leaves the outputs untouched, prints the reason and keeps it in
# /config_error.txt. main.py is yours: it runs after this file on a hard reset.
try:
    from cyphy_node.app import boot as _boot

    node = _boot()
    del _boot
except Exception as e:  # noqa: BLE001 - the REPL must come up whatever happens
    print("cyphy: boot: the node did not start (%r)" % (e,))
    node = None
