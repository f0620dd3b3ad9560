"""The HTTP endpoint of `netprof serve`: one thread, bounded connections, deadlines on clients.

prometheus_client's `start_http_server` gives every connection its own thread with no read
timeout and a listen backlog of 5 (socketserver's default): 200 clients that never finished
their headers held 200 threads, and a 1,000-connection burst left 199 connections timing out
in the kernel's SYN queue. On a node the endpoint may face anything that reaches the port, so
this server is built to stay cheap whatever the clients do:

- one selector thread does all the I/O, non-blocking: a slow client costs a socket and its
  few bytes of buffer, never a thread, and cannot hold up anyone else;
- every connection has a deadline (HEADER_TIMEOUT_S to send its request, WRITE_TIMEOUT_S to
  take the response); past it, it is closed;
- at most `max_connections` are open; a new one beyond that evicts the connection that has
  been sending its request the longest, if that is over EVICT_AFTER_S (a slow client), so a
  scrape gets in; when none is that old (a burst), accepting pauses and the rest wait in the
  listen backlog until answers free slots; on EMFILE the same;
- the listen backlog is `backlog` (default 4096; the kernel caps it at net.core.somaxconn),
  so a burst waits in the accept queue instead of being dropped;
- a request is at most MAX_REQUEST_BYTES of headers, one per connection (Connection: close).

The response is what prometheus_client would send: the format negotiated from Accept
(text or OpenMetrics), gzip when the client accepts it, rendered from the registry at
request time. Rendering runs on the I/O thread; it takes milliseconds and happens only for
complete requests, so a flood of slow clients never makes it run more often.
"""
from __future__ import annotations

import errno
import gzip
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

HEADER_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
MAX_REQUEST_BYTES = 16 * 1024
MAX_CONNECTIONS = 512
RENDER_REUSE_S = 0.5      # a rendering serves the scrapes of the next half second
RENDER_CACHE_KEYS = 64    # distinct (format, name[] filter, gzip) renderings kept at once
# A client still sending its request after this long may be evicted to make room.
EVICT_AFTER_S = 1.0
BACKLOG = 4096
_TICK_S = 0.5


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    opened: float
    request: bytearray = field(default_factory=bytearray)
    response: memoryview | None = None  # set once the request is complete


def _response(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _plain(status: str, text: str) -> bytes:
    return _response(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode())


class MetricsServer:
    """Serves `registry` on GET (and HEAD) of any path, like prometheus_client does."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, *,
                 max_connections: int = MAX_CONNECTIONS, backlog: int = BACKLOG,
                 header_timeout_s: float = HEADER_TIMEOUT_S, write_timeout_s: float = WRITE_TIMEOUT_S,
                 log: Callable[[str], None] = lambda msg: None, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        # A burst of scrapes within RENDER_REUSE_S shares one rendering (per format, filter and
        # encoding): the totals change once per sampling interval, and rendering hundreds of
        # families for each of 1,000 simultaneous clients would starve the one I/O thread.
        self._rendered: dict[tuple, tuple[float, bytes, str]] = {}
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.write_timeout_s = write_timeout_s
        self._log = log
        self._clock = clock
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(backlog)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.server_address = self._listener.getsockname()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._connections: dict[socket.socket, _Connection] = {}
        self._accept_paused = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netprof-metrics-http", daemon=True)
        # What happened, for tests and for the operator's log.
        self.requests_served = 0
        self.connections_evicted = 0
        self.connections_timed_out = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stopping.set()
        try:
            self._wake_writer.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def server_close(self) -> None:
        for conn in list(self._connections.values()):
            self._close(conn)
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()
        self._selector.close()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            for key, events in self._selector.select(timeout=_TICK_S):
                sock = key.fileobj
                if sock is self._listener:
                    self._accept()
                elif sock is self._wake_reader:
                    self._drain_wakeups()
                else:
                    conn = self._connections.get(sock)  # type: ignore[arg-type]
                    if conn is None:
                        continue
                    try:
                        if events & selectors.EVENT_READ:
                            self._read(conn)
                        elif events & selectors.EVENT_WRITE:
                            self._write(conn)
                    except Exception as exc:  # a bug must cost one connection, never the endpoint
                        self._log(f"metrics endpoint: dropped a connection: {type(exc).__name__}: {exc}")
                        self._close(conn)
            self._expire()

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_reader.recv(64):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        # Accept what the backlog holds now, not only one: a burst drains in a few turns.
        for _ in range(256):
            if len(self._connections) >= self.max_connections and not self._evict_slowest():
                self._pause_accepting()  # the rest wait in the listen backlog, not in our memory
                return
            try:
                sock, _addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    if not self._evict_slowest():
                        self._pause_accepting()
                        return
                    continue  # room made: take the next one
                return  # ECONNABORTED and friends: that client is gone already
            sock.setblocking(False)
            now = self._clock()
            conn = _Connection(sock, deadline=now + self.header_timeout_s, opened=now)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _pause_accepting(self) -> None:
        if not self._accept_paused:
            self._selector.unregister(self._listener)
            self._accept_paused = True

    def _resume_accepting(self) -> None:
        if self._accept_paused and len(self._connections) < self.max_connections:
            self._selector.register(self._listener, selectors.EVENT_READ)
            self._accept_paused = False

    def _evict_slowest(self) -> bool:
        """Close the connection that has been sending its request longest, if that is longer
        than EVICT_AFTER_S: a burst of fresh clients waits its turn, a slow one makes room."""
        old_enough = self._clock() - EVICT_AFTER_S
        reading = [c for c in self._connections.values() if c.response is None and c.opened <= old_enough]
        if not reading:
            return False
        self.connections_evicted += 1
        self._close(min(reading, key=lambda c: c.opened))
        return True

    def _expire(self) -> None:
        now = self._clock()
        for conn in [c for c in self._connections.values() if c.deadline <= now]:
            self.connections_timed_out += 1
            self._close(conn)
        # Paused and full: someone waiting in the backlog gets the slot of a client that has
        # turned slow since.
        if self._accept_paused and select.select([self._listener], [], [], 0)[0] and self._evict_slowest():
            self._accept()

    def _read(self, conn: _Connection) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not chunk:
            self._close(conn)  # the client gave up before finishing its request
            return
        conn.request += chunk
        end = conn.request.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.request) > MAX_REQUEST_BYTES:
                self._respond(conn, _plain("431 Request Header Fields Too Large", "request headers too large\n"))
            return
        self._respond(conn, self._handle(bytes(conn.request[:end])))

    def _respond(self, conn: _Connection, payload: bytes) -> None:
        conn.response = memoryview(payload)
        conn.deadline = self._clock() + self.write_timeout_s
        self._selector.modify(conn.sock, selectors.EVENT_WRITE)
        self._write(conn)  # most responses fit the socket buffer: done without another turn

    def _write(self, conn: _Connection) -> None:
        assert conn.response is not None
        try:
            sent = conn.sock.send(conn.response)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        conn.response = conn.response[sent:]
        if not conn.response:
            self.requests_served += 1
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if self._connections.pop(conn.sock, None) is None:
            return
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self._resume_accepting()

    # -- HTTP ------------------------------------------------------------------------------
    def _handle(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _plain("400 Bad Request", "bad request line\n")
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", [("Allow", "GET, HEAD")], b"")
        if target.split("?", 1)[0] == "/favicon.ico":
            return _response("200 OK", [], b"")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        names = parse_qs(urlsplit(target).query).get("name[]")
        zipped = gzip_accepted(headers.get("accept-encoding", ""))
        key = (headers.get("accept", ""), tuple(names) if names else None, zipped)
        now = self._clock()
        cached = self._rendered.get(key)
        if cached is not None and cached[0] > now:
            body, content_type = cached[1], cached[2]
        else:
            try:
                encoder, content_type = choose_encoder(headers.get("accept", ""))
                # ?name[]=…: only those families, as prometheus_client's server allows.
                body = encoder(self.registry.restricted_registry(names) if names else self.registry)
            except Exception as exc:  # a collector bug: this scrape fails, the endpoint stays up
                self._log(f"rendering /metrics failed: {type(exc).__name__}: {exc}")
                return _plain("500 Internal Server Error", "rendering the metrics failed\n")
            if zipped:
                body = gzip.compress(body)
            if len(self._rendered) >= RENDER_CACHE_KEYS:
                self._rendered.clear()   # clients asking for ever-new filters get no memory
            self._rendered[key] = (now + RENDER_REUSE_S, body, content_type)
        response_headers = [("Content-Type", content_type)]
        if zipped:
            response_headers.append(("Content-Encoding", "gzip"))
        payload = _response("200 OK", response_headers, body)
        if method == "HEAD":
            payload = payload[: len(payload) - len(body)]
        return payload
