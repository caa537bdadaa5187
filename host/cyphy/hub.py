"""One thread for the input and the timers of every protocol session in a process.

A session used to run two threads of its own (a reader and a heartbeat); with hundreds of
sessions (the gateway, a fleet tool) the process then spent its time switching threads:
the cost of one frame grew from ~16 us with one session to 50-150 us with 100-400 of them,
and 400 nodes at 50 Hz lost 39 % of their frames. Here one thread waits on every link at
once (selectors: epoll on Linux) and keeps one heap of timers, so the cost of a frame does
not depend on how many sessions there are.

    hub = Hub.shared()                       # the process's hub, started on first use
    w = hub.watch(link, on_frame, on_closed) # on_frame(bytes) runs in the hub's thread
    t = hub.call_later(0.5, fn)              # fn() runs in the hub's thread; t.cancel()
    hub.submit(fn)                           # fn() may block: it runs in a small pool
    w.close()

A link is watched by the selector when it has `fileno()` and `poll()`: poll() takes what
has arrived without blocking and returns the whole frames (a list, maybe empty), or None
when the link is busy with something else for a moment (a serial link running code in the
raw REPL): the hub then looks again 20 ms later. Any other link (a test's wrapper with
only recv()) gets a reader thread of its own, as before.

Callbacks must not block: what may (a serial link's send can re-enter node.serve() for
seconds) goes through submit().
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

log = logging.getLogger("cyphy.hub")

__all__ = ["Hub", "Watch", "Timer"]

BUSY_RETRY_S = 0.02      # a busy link is looked at again after this long
FAILED_RETRY_S = 0.05    # a link whose read failed: again after this long (as the old reader)
POOL_WORKERS = 8         # threads for work that may block (submit)
MAX_FRAMES_PER_POLL = 64  # then the other links get their turn


class Timer:
    """A callback due at a time (monotonic); cancel() before it runs and it never does."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], Any]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Watch:
    """A link being read by the hub. close() stops it (the link itself stays open)."""

    def __init__(self, hub: "Hub", link: Any, on_frame: Callable[[bytes], None]) -> None:
        self.hub = hub
        self.link = link
        self.on_frame = on_frame
        self.closed = False
        self.registered = False
        self.fd = -1            # the fd it is registered under (the link may be closed since)
        self.thread: threading.Thread | None = None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.thread is None:
            # synchronous: once close() returns, the hub no longer reads the link (and the
            # caller may close it: its fd number can then be reused)
            done = threading.Event()

            def unregister() -> None:
                self.hub._unregister(self)
                done.set()

            self.hub._call(unregister)
            done.wait(2)
        elif self.thread is not threading.current_thread():
            self.thread.join(timeout=2)


def _selectable(link: Any) -> bool:
    if not callable(getattr(link, "poll", None)):
        return False
    try:
        return link.fileno() >= 0
    except Exception:  # noqa: BLE001 - io.UnsupportedOperation, AttributeError (rfc2217://...)
        return False


class Hub:
    _shared: "Hub | None" = None
    _shared_lock = threading.Lock()
    _shared_pid = 0

    @classmethod
    def shared(cls) -> "Hub":
        """The process's hub (a new one in a forked child: threads do not survive a fork)."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared_pid != os.getpid():
                cls._shared = cls()
                cls._shared_pid = os.getpid()
            return cls._shared

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()      # the timer heap and the call queue
        self._calls: list[Callable[[], Any]] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._pool: ThreadPoolExecutor | None = None
        self._thread = threading.Thread(target=self._run, name="cyphy hub", daemon=True)
        self._thread.start()
        self.frames = 0                    # frames delivered (all links)

    # ---- the API (any thread) ----

    def watch(self, link: Any, on_frame: Callable[[bytes], None]) -> Watch:
        """Deliver every frame that arrives on link to on_frame, in the hub's thread (or,
        for a link without fileno()/poll(), in a reader thread of its own)."""
        w = Watch(self, link, on_frame)
        if _selectable(link):
            self._call(lambda: self._register(w))
        else:
            w.thread = threading.Thread(target=self._read_thread, args=(w,), daemon=True,
                                        name=f"cyphy reader {link.describe()}")
            w.thread.start()
        return w

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        t = Timer(time.monotonic() + max(0.0, delay), fn)
        with self._lock:
            heapq.heappush(self._timers, (t.when, next(self._order), t))
        self._wake()
        return t

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run fn() in the hub's pool (work that may block: a serial link's send, a request)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(POOL_WORKERS, thread_name_prefix="cyphy hub pool")
        self._pool.submit(self._guarded, fn)

    def in_hub(self) -> bool:
        return threading.current_thread() is self._thread

    # ---- inside ----

    def _call(self, fn: Callable[[], Any]) -> None:
        if self.in_hub():
            fn()
            return
        with self._lock:
            self._calls.append(fn)
        self._wake()

    def _wake(self) -> None:
        if self.in_hub():
            return
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass  # already full of wake-ups

    @staticmethod
    def _guarded(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - one session's trouble must not stop the others
            log.exception("in a hub callback")

    def _register(self, w: Watch, look: bool = False) -> None:
        if w.closed or w.registered:
            return
        try:
            fd = w.link.fileno()
            old = self._sel.get_map().get(fd)
            if old is not None and old.data is not w:
                # a link closed without Watch.close(): the kernel gave its fd number to this
                # new link; the old entry is stale (epoll dropped it at the close)
                self._sel.unregister(fd)
                if isinstance(old.data, Watch):
                    old.data.registered = False
            self._sel.register(fd, selectors.EVENT_READ, w)
            w.registered, w.fd = True, fd
        except (OSError, ValueError, KeyError):
            self.call_later(FAILED_RETRY_S, lambda: self._register(w, True))
            return
        if look:
            # back from a pause: what the link took in meanwhile (a serial link splits the
            # bytes that came with serve()'s ready mark) is delivered without new input
            self._readable(w)

    def _unregister(self, w: Watch) -> None:
        if not w.registered:
            return
        w.registered = False
        key = self._sel.get_map().get(w.fd)   # by the fd it was registered under: the link
        if key is not None and key.data is w:  # may be closed (its fileno() then -1)
            self._sel.unregister(w.fd)

    def _readable(self, w: Watch) -> None:
        if w.closed:
            self._unregister(w)
            return
        try:
            frames = w.link.poll()
        except Exception:  # noqa: BLE001 - the link failed or was closed under us
            frames = None
            if w.closed:
                self._unregister(w)
                return
            self._pause(w, FAILED_RETRY_S)
            return
        if frames is None:
            self._pause(w, BUSY_RETRY_S)
            return
        for data in frames:
            self.frames += 1
            self._guarded(lambda: w.on_frame(data))

    def _pause(self, w: Watch, delay: float) -> None:
        self._unregister(w)
        self.call_later(delay, lambda: self._register(w, True))

    def _read_thread(self, w: Watch) -> None:
        # the old way, for links the selector cannot watch
        while not w.closed:
            try:
                data = w.link.recv(0.2)
            except Exception:  # noqa: BLE001 - the link failed or was closed under us
                if w.closed:
                    return
                time.sleep(FAILED_RETRY_S)
                continue
            if data is not None and not w.closed:
                self._guarded(lambda: w.on_frame(data))

    def _run(self) -> None:
        while True:
            timeout = None
            with self._lock:
                calls, self._calls = self._calls, []
                while self._timers and self._timers[0][2].cancelled:
                    heapq.heappop(self._timers)
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for fn in calls:
                self._guarded(fn)
            if calls:
                continue  # the calls may have added timers or links
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                self._readable(key.data)
            now = time.monotonic()
            due: list[Timer] = []
            with self._lock:
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
            for t in due:
                if not t.cancelled:
                    self._guarded(t.fn)
