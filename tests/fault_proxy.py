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
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet; never log bodies
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy._serve(self, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

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
