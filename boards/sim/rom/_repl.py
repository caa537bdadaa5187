# The sim board's REPL: friendly REPL (line editing, history, auto-indent, tab completion,
# paste mode), raw REPL and raw-paste, written to produce the same bytes as MicroPython's
# pyexec/readline on an ESP32, so that mpremote, ampy and terminal users cannot tell.
import sys
import io
from _board import BANNER, SoftReset
from _clock import repair_heap

CTRL_A = 1
CTRL_B = 2
CTRL_C = 3
CTRL_D = 4
CTRL_E = 5
HISTORY = 8
# raw-paste flow control: half of MICROPY_REPL_STDIN_BUFFER_MAX (256, not overridden by
# ports/esp32), as shared/runtime/pyexec.c mp_reader_new_stdin announces it: two windows
# (256 bytes) in flight fit ESP32's 259-byte console receive buffer
RAW_PASTE_WINDOW = 128

_COMPOUND = (b"if", b"while", b"for", b"try", b"with", b"def", b"class", b"async")


def continue_with_input(s):
    """MicroPython's rule for whether the friendly REPL asks for another line."""
    if not s:
        return False
    compound = s[0] == 0x40  # '@'
    if not compound:
        for kw in _COMPOUND:
            if s.startswith(kw) and (len(s) == len(kw) or not _isident(s[len(kw)])):
                compound = True
                break
    paren = brack = brace = 0
    quote = 0  # 1 ', 2 ", 3 ''', 4 """
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == 0x27 or c == 0x22:  # ' or "
            single, triple = (1, 3) if c == 0x27 else (2, 4)
            if quote in (0, triple) and s[i + 1 : i + 3] == bytes((c, c)):
                i += 2
                quote = triple - quote
            elif quote in (0, single):
                quote = single - quote
        elif c == 0x5C and i + 1 < n and s[i + 1] in (0x27, 0x22, 0x5C):  # backslash
            if quote:
                i += 1
        elif not quote:
            if c == 0x28:
                paren += 1
            elif c == 0x29:
                paren -= 1
            elif c == 0x5B:
                brack += 1
            elif c == 0x5D:
                brack -= 1
            elif c == 0x7B:
                brace += 1
            elif c == 0x7D:
                brace -= 1
        i += 1
    if quote in (3, 4):
        return True
    if (paren > 0 or brack > 0 or brace > 0) and quote == 0:
        return True
    if s[-1] == 0x5C:
        return True
    return compound and s[-1] != 0x0A


def _isident(c):
    return c == 0x5F or 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


class Repl:
    def __init__(self, board, globals_, rom_prefix):
        self.board = board
        self.link = board.link
        self.g = globals_
        self.rom_file = '  File "' + rom_prefix
        self.history = []  # newest first
        self.announced = False

    def out(self, data):
        self.link.write_raw(data)

    def _prompted(self, mode):
        """Tell the supervisor, once, that the REPL is waiting at its prompt (node ready)."""
        if not self.announced:
            self.announced = True
            self.link.event("repl " + mode)

    # ------------------------------------------------------------ execution
    def execute(self, src, mode, print_eof=False, filename="<stdin>", compiling_sent=False):
        """Compile and run like pyexec's parse_compile_execute; True asks for a soft reboot."""
        exc = None
        reboot = False
        link = self.link
        try:
            try:
                if not compiling_sent:
                    link.compiling()
                if mode == "exec":
                    # pyexec's parse_compile_execute stores __file__ (the source name:
                    # '<stdin>', 'boot.py', 'main.py') in __main__ for file input; the
                    # friendly REPL's single input leaves it alone
                    self.g["__file__"] = filename
                code = compile(src, filename, mode)
                link.enter_user()
                exec(code, self.g)
            finally:
                link.leave_user()
                repair_heap()
        except (SystemExit, SoftReset):
            reboot = True
        except BaseException as e:  # noqa: B036 - the REPL reports everything, as ESP32 does
            exc = e
        if print_eof:
            self.out(b"\x04")
        if exc is not None:
            self.print_exception(exc)
        if print_eof:
            self.out(b"\x04")
        return reboot

    def print_exception(self, exc):
        buf = io.StringIO()
        sys.print_exception(exc, buf)
        # Our own frames (the REPL calling exec) are not part of the user's traceback.
        lines = [ln for ln in buf.getvalue().split("\n") if not ln.startswith(self.rom_file)]
        self.board.stdout.write("\n".join(lines))

    def run_file(self, name):
        """pyexec_file_if_exists: run boot.py/main.py in the REPL's globals."""
        try:
            with open(name) as f:
                src = f.read()
        except OSError:
            return False
        return self.execute(src, "exec", filename=name)

    # ------------------------------------------------------------ raw REPL
    def raw(self):
        """Returns 'friendly' or 'reboot'."""
        self.out(b"raw REPL; CTRL-B to exit\r\n")
        line = bytearray()
        self.out(b">")
        self._prompted("raw")
        while True:
            c = self.link.read_byte()
            if c == CTRL_A:
                if len(line) == 2 and line[0] == CTRL_E:
                    if self.raw_paste(line[1]):
                        return "reboot"
                else:
                    self.out(b"raw REPL; CTRL-B to exit\r\n")
                line = bytearray()
                self.out(b">")
            elif c == CTRL_B:
                self.out(b"\r\n")
                return "friendly"
            elif c == CTRL_C:
                line = bytearray()
            elif c == CTRL_D:
                if not line:
                    self.out(b"OK\r\n")
                    return "reboot"
                # 'compiling' goes out before "OK": a Ctrl-C the host sends on seeing
                # "OK" is then held for the code instead of read as input
                self.link.compiling()
                self.out(b"OK")
                if self.execute(bytes(line), "exec", print_eof=True, compiling_sent=True):
                    return "reboot"
                line = bytearray()
                self.out(b">")
            else:
                line.append(c)
                # bulk-copy whatever else is already here, up to the next control byte
                self.link.take_plain(line)

    def raw_paste(self, cmd):
        if cmd != 0x41:  # 'A'
            self.out(b"R\x00")
            return False
        self.out(b"R\x01" + bytes((RAW_PASTE_WINDOW & 0xFF, RAW_PASTE_WINDOW >> 8, 1)))
        src = bytearray()
        remain = RAW_PASTE_WINDOW
        end = 0
        while not end:
            chunk = self.link.read(remain)
            for i in range(len(chunk)):
                if chunk[i] == CTRL_C or chunk[i] == CTRL_D:
                    end = chunk[i]
                    # bytes after the end marker are not part of the program: give them back
                    self.link.unread(chunk[i + 1 :])
                    chunk = chunk[:i]
                    break
            src.extend(chunk)
            remain -= len(chunk)
            if remain == 0 and not end:
                self.out(b"\x01")  # a window consumed: the host may send another
                remain = RAW_PASTE_WINDOW
        if end == CTRL_D:
            self.link.compiling()
        self.out(b"\x04")  # end of data acknowledged
        if end == CTRL_C:
            self.out(b"\x04")
            self.board.stdout.write("Traceback (most recent call last):\nKeyboardInterrupt: \n")
            self.out(b"\x04")
            return False
        return self.execute(bytes(src), "exec", print_eof=True, compiling_sent=True)

    # ------------------------------------------------------------ friendly REPL
    def banner(self):
        self.out(BANNER.encode() + b'\r\nType "help()" for more information.\r\n')

    def friendly(self):
        """Returns 'raw' or 'reboot'."""
        self.banner()
        while True:
            line = bytearray()
            ret = self.readline(line, b">>> ")
            mode = "single"
            if ret == CTRL_A:
                self.out(b"\r\n")
                return "raw"
            elif ret == CTRL_B:
                self.out(b"\r\n")
                self.banner()
                continue
            elif ret == CTRL_C:
                self.out(b"\r\n")
                continue
            elif ret == CTRL_D:
                self.out(b"\r\n")
                return "reboot"
            elif ret == CTRL_E:
                if not self.paste(line):
                    continue
                mode = "exec"
            elif not line:
                continue
            else:
                cancelled = False
                while continue_with_input(line):
                    line.append(10)
                    ret = self.readline(line, b"... ")
                    if ret == CTRL_C:
                        self.out(b"\r\n")
                        cancelled = True
                        break
                    if ret == CTRL_D:
                        break
                if cancelled:
                    continue
            if self.execute(bytes(line), mode):
                return "reboot"

    def paste(self, line):
        self.out(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        while True:
            c = self.link.read_byte()
            if c == CTRL_C:
                self.out(b"\r\n")
                return False
            if c == CTRL_D:
                self.out(b"\r\n")
                return True
            line.append(c)
            self.out(b"\r\n=== " if c == 13 else bytes((c,)))

    # ------------------------------------------------------------ line editor
    def _back(self, n):
        if n > 0:
            self.out(b"\x08" * n if n <= 4 else b"\x1b[%dD" % n)

    def readline(self, line, prompt):
        """Edit one line appended to `line`; returns 0 on Enter or a control char (1-5)."""
        start = len(line)
        cur = start
        hist = -1
        just_indented = False
        self.out(prompt)
        self._prompted("friendly")
        if start:
            n = self._auto_indent(line)
            if n:
                line.extend(b" " * n)
                self.out(b" " * n)
                cur += n
                just_indented = True
        esc = 0  # 0 none, 1 ESC, 2 ESC [, 3 ESC [ digit
        esc_digit = 0
        read = self.link.read_byte
        while True:
            c = read()
            before = len(line)
            redraw_from = -1  # redraw the line from this position, then put the cursor at cur
            if esc == 0:
                empty = len(line) == start
                if CTRL_A <= c <= CTRL_E and empty:
                    return c
                if c == CTRL_A:
                    self._back(cur - start)
                    cur = start
                elif c == CTRL_B:
                    if cur > start:
                        self._back(1)
                        cur -= 1
                elif c == CTRL_C:
                    return c
                elif c == CTRL_D:
                    if cur < len(line):
                        line[cur : cur + 1] = b""
                        redraw_from = cur
                elif c == CTRL_E:
                    self.out(bytes(line[cur:]))
                    cur = len(line)
                elif c == 6:  # Ctrl-F
                    if cur < len(line):
                        self.out(bytes(line[cur : cur + 1]))
                        cur += 1
                elif c == 11:  # Ctrl-K: kill to end of line
                    line[cur:] = b""
                    redraw_from = cur
                elif c == 14 or c == 16:  # Ctrl-N / Ctrl-P: history
                    hist, cur = self._history(line, start, cur, hist, c == 16)
                elif c == 21:  # Ctrl-U: kill to start of line
                    n = cur - start
                    line[start:cur] = b""
                    self._back(n)
                    cur = start
                    redraw_from = cur
                elif c == 13:
                    self.out(b"\r\n")
                    entry = bytes(line[start:])
                    if entry and (not self.history or self.history[0] != entry):
                        self.history.insert(0, entry)
                        del self.history[HISTORY:]
                    return 0
                elif c == 27:
                    esc = 1
                elif c == 8 or c == 127:
                    if cur > start:
                        n = 1
                        seg = line[start:cur]
                        if len(seg) >= 4 and seg.count(b" ") == len(seg):
                            n = 4  # undo one auto-indent level at once
                        line[cur - n : cur] = b""
                        self._back(n)
                        cur -= n
                        redraw_from = cur
                elif just_indented and (c == 9 or c == 32):
                    # Tab or space straight after an auto-indent: keep (tab) or trim it (space)
                    just_indented = False
                    if c == 32:
                        line[cur - 3 : cur] = b""
                        self._back(3)
                        cur -= 3
                        redraw_from = cur
                elif c == 9:
                    cur = self._complete(line, start, cur, prompt)
                elif 32 <= c <= 126:
                    line[cur:cur] = bytes((c,))
                    self.out(bytes(line[cur:]))
                    cur += 1
                    self._back(len(line) - cur)
                if c not in (9, 32):
                    just_indented = False
            elif esc == 1:
                esc = 2 if c == 0x5B else 4 if c == 0x4F else 0
            elif esc == 2:
                esc = 0
                if 0x30 <= c <= 0x39:
                    esc = 3
                    esc_digit = c
                elif c == 0x41:  # up
                    hist, cur = self._history(line, start, cur, hist, True)
                elif c == 0x42:  # down
                    hist, cur = self._history(line, start, cur, hist, False)
                elif c == 0x43:  # right
                    if cur < len(line):
                        self.out(bytes(line[cur : cur + 1]))
                        cur += 1
                elif c == 0x44:  # left
                    if cur > start:
                        self._back(1)
                        cur -= 1
                elif c == 0x48:  # home
                    self._back(cur - start)
                    cur = start
                elif c == 0x46:  # end
                    self.out(bytes(line[cur:]))
                    cur = len(line)
            elif esc == 3:
                esc = 0
                if c == 0x7E:  # ~
                    if esc_digit in (0x31, 0x37):
                        self._back(cur - start)
                        cur = start
                    elif esc_digit in (0x34, 0x38):
                        self.out(bytes(line[cur:]))
                        cur = len(line)
                    elif esc_digit == 0x33 and cur < len(line):
                        line[cur : cur + 1] = b""
                        redraw_from = cur
            else:  # ESC O x
                esc = 0
                if c == 0x48:
                    self._back(cur - start)
                    cur = start
                elif c == 0x46:
                    self.out(bytes(line[cur:]))
                    cur = len(line)
            if redraw_from >= 0:
                # Cursor is at redraw_from: erase what the line lost, draw the rest, come back.
                if len(line) < before:
                    self.out(b"\x1b[K")
                self.out(bytes(line[redraw_from:]))
                self._back(len(line) - cur)

    def _history(self, line, start, cur, hist, older):
        new = hist + 1 if older else hist - 1
        if older and new >= len(self.history):
            return hist, cur
        if not older and hist < 0:
            return hist, cur
        old_len = len(line)
        self._back(cur - start)
        line[start:] = b""
        if new >= 0:
            line.extend(self.history[new])
        if len(line) < old_len:
            self.out(b"\x1b[K")
        self.out(bytes(line[start:]))
        return new, len(line)

    def _auto_indent(self, line):
        """Spaces to pre-fill on a continuation line (MicroPython's auto-indent)."""
        if len(line) < 2 or line[-1] != 10:
            return 0
        body = bytes(line[:-1])
        prev = body.rsplit(b"\n", 1)[-1]
        stripped = prev.lstrip(b" ")
        spaces = len(prev) - len(stripped)
        if not stripped and b"\n" in body:
            before = body.rsplit(b"\n", 2)[-2]
            if not before.strip(b" "):
                return 0  # two blank lines in a row end the block
        n = spaces // 4
        if prev.endswith(b":"):
            n += 1
        return 4 * n

    def _complete(self, line, start, cur, prompt):
        text = bytes(line[start:cur])
        if text and text[-1:] in (b" ", b"\t"):
            line[cur:cur] = b"    "
            self.out(b"    " + bytes(line[cur + 4 :]))
            self._back(len(line) - cur - 4)
            return cur + 4
        i = len(text)
        while i > 0 and (_isident(text[i - 1]) or text[i - 1] == 0x2E):
            i -= 1
        word = text[i:].decode()
        parts = word.split(".")
        prefix = parts[-1]
        if len(parts) == 1:
            import builtins

            names = list(self.g.keys()) + dir(builtins)
        else:
            obj = self.g.get(parts[0])
            if obj is None:
                return cur
            try:
                for p in parts[1:-1]:
                    obj = getattr(obj, p)
            except AttributeError:
                return cur
            names = dir(obj)
        hide_private = not prefix.startswith("_")
        matches = sorted(
            set(n for n in names if n.startswith(prefix) and not (hide_private and n.startswith("__")))
        )
        if not matches:
            if not word or not "import ".startswith(word) or i != 0:
                return cur
            matches = ["import "]
        common = matches[0]
        for m in matches[1:]:
            k = 0
            while k < len(common) and k < len(m) and common[k] == m[k]:
                k += 1
            common = common[:k]
        if len(matches) == 1 or len(common) > len(prefix):
            add = common[len(prefix) :].encode()
            line[cur:cur] = add
            self.out(bytes(line[cur:]))
            self._back(len(line) - cur - len(add))
            return cur + len(add)
        # several matches: list them in 16-column slots, then redraw the prompt and line
        out = []
        width = 64
        for m in matches:
            gap = (width + 15) // 16 * 16 - width
            if gap < 2:
                gap += 16
            if width + gap + len(m) <= 64:
                out.append(" " * gap + m)
                width += gap + len(m)
            else:
                out.append("\n" + m)
                width = len(m)
        self.board.stdout.write("".join(out) + "\n")
        self.out(prompt + bytes(line[start:]))
        self._back(len(line) - cur)
        return cur
