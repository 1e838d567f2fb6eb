"""A loopback HTTP proxy that injects faults in front of the real local FHIR server.

Why a proxy rather than mocks: the client's retry/auth code then runs against real
sockets and the real server's state, so "nothing lost, nothing duplicated" is checked
on what the server actually stored.

Faults are queued (``proxy.add(Fault(...))``) and each is consumed by the next matching
request; requests without a pending fault are forwarded untouched. Kinds:

- ``status``: answer ``status`` with ``headers`` (e.g. 429 + Retry-After) without forwarding
- ``reset``: abort the TCP connection (RST) without forwarding
- ``reset_after``: forward (the server applies the request), then abort: the response is lost
- ``delay``: forward, then hold the answer ``seconds`` (past the client's read timeout)
- ``hold``: wait at ``barrier`` (a ``threading.Barrier``) until its other parties arrive or
  it times out, then forward: makes two clients' requests meet at the server at once

``require_tokens`` makes every request without ``Authorization: Bearer <one of them>`` get
401, to test refresh-on-401. Only 127.0.0.1 is served and forwarded to; every wait is bounded.

Two server-wide conditions besides the queued faults:

- ``rate_limit(per_second, retry_after)``: a server with that capacity (token bucket, one
  second of burst) answers 429 + ``Retry-After`` to what exceeds it, as Azure's or Google's
  FHIR services do under load.
- ``outage_after(n, seconds, ...)``: after the n-th matching request has been answered the
  proxy is unreachable for ``seconds`` (listening socket closed: connection refused; open
  keep-alive connections reset), then listens again on the same port. ``events`` records
  ``("down"|"up", monotonic time, requests logged so far)``.
"""
from __future__ import annotations

import dataclasses
import http.client
import http.server
import socket
import struct
import threading
import time
import urllib.parse
from typing import Optional

MAX_DELAY = 10.0


@dataclasses.dataclass
class Fault:
    kind: str  # status | reset | reset_after | delay
    status: int = 503
    headers: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    method: Optional[str] = None  # only requests with this method match
    path_contains: Optional[str] = None  # only paths containing this match
    body: Optional[bytes] = None  # answer body for ``status`` (default: an OperationOutcome)
    body_contains: Optional[bytes] = None  # only requests whose body contains this match
    barrier: Optional[threading.Barrier] = None  # for ``hold``

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        return ((self.method is None or self.method == method) and
                (self.path_contains is None or self.path_contains in path) and
                (self.body_contains is None or self.body_contains in body))


class FaultProxy:
    def __init__(self, upstream: str):
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("the fault proxy only forwards to loopback")
        self.upstream_host = "127.0.0.1"
        self.upstream_port = parsed.port
        self.base_path = parsed.path.rstrip("/")
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        #: (method, path, status or kind) for each request seen, for assertions
        self.log: list[tuple[str, str, object]] = []
        self.require_tokens: Optional[set] = None
        self._rate: Optional[list] = None  # [per_second, retry_after, tokens, last time]
        self._outage: Optional[dict] = None
        self._conns: set = set()  # open client connections, to reset them when going down
        self.events: list[tuple[str, float]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet; never log bodies
                pass

            def setup(self):
                super().setup()
                with proxy._lock:
                    proxy._conns.add(self.connection)

            def finish(self):
                with proxy._lock:
                    proxy._conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._serve(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._handler = Handler
        self._listen(0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    def _listen(self, port: int) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        if self._outage is not None:
            self._outage["cancelled"] = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    # -- server-wide conditions ---------------------------------------------------------------
    def rate_limit(self, per_second: float, retry_after: int = 1) -> None:
        with self._lock:
            self._rate = [float(per_second), retry_after, float(per_second), time.monotonic()]

    def outage_after(self, n: int, seconds: float, method: Optional[str] = None,
                     path_contains: Optional[str] = None, body_contains: Optional[bytes] = None) -> None:
        with self._lock:
            self._outage = {"left": n, "seconds": seconds, "cancelled": False,
                            "match": Fault("status", method=method, path_contains=path_contains,
                                           body_contains=body_contains)}

    def _over_rate(self) -> Optional[int]:
        """The Retry-After to answer when this request exceeds the rate limit, else None."""
        with self._lock:
            if self._rate is None:
                return None
            per_second, retry_after, tokens, last = self._rate
            now = time.monotonic()
            tokens = min(per_second, tokens + (now - last) * per_second)
            over = tokens < 1.0
            self._rate[2:] = [tokens if over else tokens - 1.0, now]
            return retry_after if over else None

    def _count_for_outage(self, method: str, path: str, body: bytes) -> None:
        with self._lock:
            o = self._outage
            if o is None or o["left"] <= 0 or not o["match"].matches(method, path, body):
                return
            o["left"] -= 1
            if o["left"] > 0:
                return
        threading.Thread(target=self._go_down, args=(o,), daemon=True).start()

    def _go_down(self, o: dict) -> None:
        port = self.port
        self.server.shutdown()
        self.server.server_close()  # new connections: refused
        with self._lock:
            self.events.append(("down", time.monotonic(), len(self.log)))
            conns = list(self._conns)
        for c in conns:  # keep-alive connections: reset
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + o["seconds"]
        while time.monotonic() < deadline and not o["cancelled"]:
            time.sleep(0.1)
        if o["cancelled"]:
            return
        self._listen(port)
        self.thread.start()
        with self._lock:
            self.events.append(("up", time.monotonic(), len(self.log)))

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def pending(self) -> int:
        with self._lock:
            return len(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.log.clear()
        self.require_tokens = None

    def _take(self, method: str, path: str, body: bytes = b"") -> Optional[Fault]:
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.matches(method, path, body):
                    return self._faults.pop(i)
        return None

    def _record(self, method, path, what):
        with self._lock:
            self.log.append((method, path, what))

    # -- serving --------------------------------------------------------------------------
    def _serve(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        method, path = h.command, h.path
        if self.require_tokens is not None:
            auth = h.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            if token not in self.require_tokens:
                self._record(method, path, 401)
                self._reply(h, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                            _outcome("login", "Unauthorized"))
                return
        retry_after = self._over_rate()
        if retry_after is not None:
            self._record(method, path, 429)
            self._reply(h, 429, {"Retry-After": str(retry_after)}, _outcome("throttled", "over capacity"))
            return
        fault = self._take(method, path, body)
        if fault is not None and fault.kind == "status":
            self._record(method, path, fault.status)
            self._reply(h, fault.status, fault.headers,
                        fault.body if fault.body is not None else _outcome("throttled", "injected"))
            return
        if fault is not None and fault.kind == "reset":
            self._record(method, path, "reset")
            self._abort(h)
            return
        if fault is not None and fault.kind == "hold":
            try:
                fault.barrier.wait(timeout=MAX_DELAY)
            except threading.BrokenBarrierError:
                pass  # the other party never came: forward alone
        status, headers, data = self._forward(method, path, h.headers, body)
        if fault is not None and fault.kind == "reset_after":
            self._record(method, path, "reset_after")
            self._abort(h)
            return
        if fault is not None and fault.kind == "delay":
            self._record(method, path, "delay")
            time.sleep(min(fault.seconds, MAX_DELAY))
        else:
            self._record(method, path, status)
        try:
            self._reply(h, status, headers, data)
        except OSError:
            h.close_connection = True  # the client gave up (timeout) and closed
        self._count_for_outage(method, path, body)

    def _forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            fwd = {k: v for k, v in headers.items()
                   if k.lower() not in ("host", "connection", "keep-alive", "content-length")}
            conn.request(method, path, body=body or None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            keep = {k: v for k, v in resp.getheaders()
                    if k.lower() not in ("connection", "keep-alive", "content-length",
                                         "transfer-encoding", "date")}
            return resp.status, keep, data
        finally:
            conn.close()

    @staticmethod
    def _reply(h, status, headers, data: bytes):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    @staticmethod
    def _abort(h):
        """Close with RST (SO_LINGER 0) so the client sees a connection reset."""
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        h.close_connection = True
        try:
            h.connection.close()
        except OSError:
            pass


def _outcome(code: str, text: str) -> bytes:
    import json
    return json.dumps({"resourceType": "OperationOutcome",
                       "issue": [{"severity": "error", "code": code,
                                  "details": {"text": text}}]}).encode()
