"""The `cyphy` console script. It imports the command line itself, so that a Ctrl-C while
Python is still loading it (click, rich, the commands: a noticeable moment on a slow
machine) ends with one line and exit 130 like a Ctrl-C in any command, not a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from cyphy.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted while cyphy was starting: nothing was done\n")
        sys.exit(130)
    run()
