"""Wire sizes of one telemetry sample in cyphy and other protocols (cyphy.wire_sizes).

    .venv/bin/python tools/wire_sizes.py                           # the markdown table
    .venv/bin/python tools/wire_sizes.py --json                    # sizes and bytes, JSON
    .venv/bin/python tools/wire_sizes.py --check docs/protocol.md  # exit 1 if stale
    .venv/bin/python tools/wire_sizes.py --write docs/protocol.md  # regenerate the table

In a document the table sits between the lines BEGIN and END below; --write replaces
what is between them and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cyphy.wire_sizes import encodings, markdown_table

BEGIN = "<!-- wire-sizes:begin -->"
END = "<!-- wire-sizes:end -->"


class MarkerError(ValueError):
    pass


def _span(text: str, path: Path) -> tuple[int, int]:
    """Offsets of what lies between the markers (the markers excluded)."""
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < 0 or e < b or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise MarkerError(f"{path}: needs one line {BEGIN} and, after it, one line {END}")
    return b + len(BEGIN), e


def table_in(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    start, end = _span(text, path)
    return text[start:end].strip("\n") + "\n"


def write(path: Path) -> bool:
    """Put the current table between the markers; True if the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = _span(text, path)
    new = text[:start] + "\n" + markdown_table() + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def as_json() -> str:
    rows = [{"name": e.name, "system": e.system, "size": e.size, "seq": e.seq,
             "timestamp": e.timestamp, "auth": e.auth, "notes": e.notes, "hex": e.data.hex()}
            for e in encodings()]
    return json.dumps(rows, indent=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="print sizes and bytes as JSON")
    mode.add_argument("--check", type=Path, metavar="DOC",
                      help="exit 1 unless DOC's table equals the computed one")
    mode.add_argument("--write", type=Path, metavar="DOC", help="regenerate DOC's table")
    args = ap.parse_args(argv)
    try:
        if args.check:
            if table_in(args.check) != markdown_table():
                print(f"{args.check}: the wire-size table is stale; regenerate it with\n"
                      f"  .venv/bin/python tools/wire_sizes.py --write {args.check}",
                      file=sys.stderr)
                return 1
            print(f"{args.check}: wire-size table is up to date")
        elif args.write:
            changed = write(args.write)
            print(f"{args.write}: {'table rewritten' if changed else 'already up to date'}")
        else:
            sys.stdout.write(as_json() + "\n" if args.json else markdown_table())
    except (OSError, MarkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
