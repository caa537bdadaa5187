# Files on the node's flash that must never be half-written: the fault log, the autotune
# results, a patched config, the last config error. One way for all of them: write the
# whole text to PATH.tmp, read it back and compare, then rename over PATH (LittleFS renames
# atomically), so a reset at any moment leaves the old file or the new one, never a mix.
# Allocates and writes flash: call it from the node's service or the REPL, never from the
# control pass.
import os


def write_atomic(path, text):
    """Replace the file at path with text (str or bytes); OSError if flash refuses or the
    read-back differs (the old file is then left as it was)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    with open(tmp, "rb") as f:
        back = f.read()
    if back != data:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise OSError("%s: read-back differs from what was written" % tmp)
    os.rename(tmp, path)
