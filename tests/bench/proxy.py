"""A byte-counting TCP proxy for the benchmark (127.0.0.1 only).

    p = CountingProxy("127.0.0.1", dovecot.port).start()
    p.reset()
    ... run a client against p.port ...
    snap = p.snapshot()    # {"up", "down", "total", "connections", "compress"}
    p.stop()

Counts every byte in both directions (up = client to server, down = server
to client) over all connections, with per-connection records: whether the
client sent "COMPRESS DEFLATE" (looked for in its first 64 KB upstream) and
the timestamps of every forwarded chunk (for activity bursts: see
bursts()).  One thread per direction per connection with blocking
recv/sendall, so the proxy adds little latency and no buffering beyond one
64 KB chunk.
"""

import re
import socket
import threading
import time


class _Conn:
    __slots__ = ("id", "opened", "closed", "up", "down", "head", "compress", "events")

    def __init__(self, cid):
        self.id = cid
        self.opened = time.monotonic()
        self.closed = None
        self.up = 0
        self.down = 0
        self.head = b""
        self.compress = False
        self.events = []          # (monotonic time, direction 'u'/'d', nbytes)


class CountingProxy:
    def __init__(self, target_host, target_port, listen_host="127.0.0.1", record_events=True):
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = None
        self.record_events = record_events
        self._lock = threading.Lock()
        self._conns = []
        self._socks = set()
        self._lsock = None
        self._thread = None
        self._base_up = 0
        self._base_down = 0
        self._epoch = 0           # connections opened before the last reset

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.listen_host, 0))
        s.listen(128)
        self.port = s.getsockname()[1]
        self._lsock = s
        self._thread = threading.Thread(target=self._accept, daemon=True, name="bench-proxy")
        self._thread.start()
        return self

    def _accept(self):
        lsock = self._lsock
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=10)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                conn = _Conn(len(self._conns))
                self._conns.append(conn)
                self._socks.update((c, u))
            threading.Thread(target=self._pump, args=(conn, c, u, "u"), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, u, c, "d"), daemon=True).start()

    def _pump(self, conn, src, dst, direction):
        rec = self.record_events
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                n = len(data)
                now = time.monotonic()
                with self._lock:
                    if direction == "u":
                        conn.up += n
                        if len(conn.head) < 65536:
                            conn.head += data[:65536]
                            if not conn.compress and re.search(rb"(?i)\bCOMPRESS DEFLATE\b", conn.head):
                                conn.compress = True
                    else:
                        conn.down += n
                    if rec:
                        conn.events.append((now, direction, n))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                second = conn.closed is not None
                if not second:
                    conn.closed = time.monotonic()
                else:
                    self._socks.discard(src)
                    self._socks.discard(dst)
            if second:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass

    # -- counters
    def _totals(self):
        up = sum(c.up for c in self._conns)
        down = sum(c.down for c in self._conns)
        return up, down

    def reset(self):
        """Start a new measurement window: counters to zero, events dropped."""
        with self._lock:
            self._base_up, self._base_down = self._totals()
            self._epoch = len(self._conns)
            self._reset_at = time.monotonic()
            for c in self._conns:
                c.events = []
        return self

    def snapshot(self):
        with self._lock:
            up, down = self._totals()
            up -= self._base_up
            down -= self._base_down
            new = self._conns[self._epoch:]
            return {"up": up, "down": down, "total": up + down,
                    "connections": len(new),
                    "compress": any(c.compress for c in new)}

    def events(self):
        """All (time, dir, nbytes) since the last reset, sorted by time."""
        with self._lock:
            ev = [e for c in self._conns for e in c.events]
        ev.sort()
        return ev

    def bursts(self, gap=0.25):
        """Activity bursts since the last reset: lists of events separated by
        more than gap seconds of silence.  Returns [(start, end, up, down)]."""
        out = []
        cur = None
        for t, d, n in self.events():
            if cur is None or t - cur[1] > gap:
                if cur:
                    out.append(tuple(cur))
                cur = [t, t, 0, 0]
            cur[1] = t
            if d == "u":
                cur[2] += n
            else:
                cur[3] += n
        if cur:
            out.append(tuple(cur))
        return out

    def open_connections(self):
        with self._lock:
            return sum(1 for c in self._conns if c.closed is None)

    def stop(self):
        if self._lsock:
            try:
                self._lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._lsock.close()
            self._lsock = None
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
