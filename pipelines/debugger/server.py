"""``iomt-fhir debugger``: the mapping debugger page and its JSON API on a local port.

Why the standard library's HTTP server: the page is one user's edit-run-look loop on
their own machine; a framework would add a dependency for three routes. Safety is
by construction rather than configuration:

* loopback only (``127.0.0.1``) unless ``--host`` is given, and then the Host header
  must name the address served (no DNS rebinding from a web page);
* ``POST /api/run`` takes at most ``MAX_REQUEST_BYTES`` of JSON, runs the pure engine
  (``engine.run``) and touches no file system; the files named on the command line
  are read once at start-up, by the command, into the start-up editors;
* nothing of the mappings or messages is logged: no access log, and an unexpected
  error is reported by its type only;
* static files come from the package (``static/``), so an installed package serves
  the same page; nothing is loaded from a CDN.
"""
import json
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Dict, Optional

MAX_REQUEST_BYTES = 4 * 1024 * 1024
DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_file(name: str) -> Optional[bytes]:
    """A file of the page shipped in the package, or ``None`` (no path walking)."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    ref = resources.files(__package__).joinpath("static", name)
    return ref.read_bytes() if ref.is_file() else None


class DebuggerHandler(BaseHTTPRequestHandler):
    server_version = "iomt-fhir-debugger"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # --- plumbing ------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """No access log: request lines are harmless, but keep the promise simple."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in _SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                   "application/json; charset=utf-8")

    def _fail(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _host_allowed(self) -> bool:
        allowed = self.server.allowed_hosts
        if allowed is None:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        return host in allowed

    # --- routes ------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if not self._host_allowed():
            return self._fail(HTTPStatus.FORBIDDEN, "Unexpected Host header.")
        path = self.path.split("?", 1)[0]
        if path == "/api/start":
            return self._json(HTTPStatus.OK, self.server.start_state())
        name = "index.html" if path == "/" else path[len("/static/"):] if path.startswith("/static/") else None
        body = static_file(name) if name else None
        if body is None:
            return self._fail(HTTPStatus.NOT_FOUND, "Not found.")
        ext = name[name.rfind("."):]
        self._send(HTTPStatus.OK, body, _STATIC_TYPES.get(ext, "application/octet-stream"))

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        from pipelines.debugger.engine import BadRequest, run

        if not self._host_allowed():
            return self._fail(HTTPStatus.FORBIDDEN, "Unexpected Host header.")
        if self.path.split("?", 1)[0] != "/api/run":
            return self._fail(HTTPStatus.NOT_FOUND, "Not found.")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._fail(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required.")
        if length < 0 or length > MAX_REQUEST_BYTES:
            self.close_connection = True
            return self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"The request is larger than {MAX_REQUEST_BYTES} bytes.")
        if "json" not in (self.headers.get("Content-Type") or "").lower():
            return self._fail(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Send application/json.")
        raw = self.rfile.read(length)
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._fail(HTTPStatus.BAD_REQUEST, "The request is not UTF-8 JSON.")
        try:
            result = run(request)
        except BadRequest as e:
            return self._fail(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # a bug of ours: say which, never with the content
            print(f"iomt-fhir debugger: internal error {type(e).__name__}", file=sys.stderr)
            return self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"Internal error ({type(e).__name__}).")
        self._json(HTTPStatus.OK, result)


class DebuggerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, initial: Dict[str, str]):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), DebuggerHandler)
        self.initial = initial
        port = self.server_address[1]
        # Loopback: only this machine's names may be in the Host header (a web page that
        # rebinds its DNS name to 127.0.0.1 is refused). --host: the user opened it up.
        self.allowed_hosts = ({h for n in LOOPBACK_NAMES for h in (n, f"{n}:{port}")}
                              if host in LOOPBACK_HOSTS else None)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}/"

    def start_state(self) -> Dict[str, Any]:
        from pipelines.debugger.examples import examples

        return {"initial": self.initial, "examples": examples(),
                "maxRequestBytes": MAX_REQUEST_BYTES}


def make_server(host: str = LOOPBACK, port: int = DEFAULT_PORT,
                initial: Optional[Dict[str, str]] = None) -> DebuggerServer:
    """A bound server (``port`` 0 = any free port); call ``serve_forever``."""
    return DebuggerServer(host, port, initial or {})


def serve_in_thread(server: DebuggerServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="iomt-fhir-debugger", daemon=True)
    thread.start()
    return thread


def _read(path: Optional[str], what: str) -> Optional[str]:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            return f.read()
    except OSError as e:
        from pipelines.launch_errors import LaunchError

        raise LaunchError(f"cannot read the {what} {path}: {e.strerror or e}") from None


def cmd_debugger(args) -> int:
    initial = {k: v for k, v in (
        ("deviceMapping", _read(args.device_mapping, "device mapping")),
        ("fhirMapping", _read(args.fhir_mapping, "FHIR mapping")),
        ("messages", _read(args.messages, "messages")),
        ("deviceUse", _read(args.device_use, "device-use table")),
        ("inputFormat", args.input_format)) if v is not None}
    try:
        server = make_server(args.host, args.port, initial)
    except OSError as e:
        from pipelines.launch_errors import LaunchError

        raise LaunchError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if args.host not in LOOPBACK_HOSTS:
        print(f"iomt-fhir debugger: listening on {args.host}: anyone who can reach this address "
              "can use it (it reads no files and stores nothing)", file=sys.stderr)
    print(f"Mapping debugger: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    """``iomt-fhir debugger`` (see ``pipelines.cli.COMMANDS``)."""
    d = sub.add_parser("debugger", help="edit mappings and test messages in the browser "
                                        "(problems, measurements, Observations as you type)")
    d.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    d.add_argument("--host", default=LOOPBACK,
                   help="address to listen on (default 127.0.0.1: this machine only)")
    d.add_argument("--device-mapping", help="device mapping to start with")
    d.add_argument("--fhir-mapping", help="FHIR mapping to start with")
    d.add_argument("--messages", help="test messages to start with (JSON lines)")
    d.add_argument("--device-use", help="device-use CSV to start with (device,patient,start,end[,status]): "
                                        "each reading goes to who wore its device then")
    d.add_argument("--input-format", choices=("body", "envelope"), default="body",
                   help="messages are bodies (default) or {Body, Properties, SystemProperties} envelopes")
    d.set_defaults(func=cmd_debugger)
