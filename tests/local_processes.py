"""Helpers for the real local services the tests start (FHIR server, Pub/Sub emulator, Kafka
broker, storage emulators): a free loopback port, a bounded wait until the service answers
HTTP, the tail of its log for an error message, and stopping its whole process group."""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time
from typing import Callable, Optional

import requests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ready(url: str, proc: Optional[subprocess.Popen], what: str, timeout: float,
                    detail: Callable[[], str] = lambda: "") -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits, or after ``timeout``
    seconds. ``detail`` adds context (a log tail) to the error."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}{_more(detail)}")
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"status {r.status_code}"
        except requests.RequestException as err:
            last = type(err).__name__
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s ({last}){_more(detail)}")


def _more(detail: Callable[[], str]) -> str:
    text = detail()
    return f":\n{text}" if text else ""


def log_tail(path: pathlib.Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a service's log (for the error when it does not start)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process_group(proc: subprocess.Popen, what: str, term_wait: float, kill_wait: float = 10.0) -> None:
    """SIGTERM to the service's own process group (launcher scripts start a JVM or Node below
    them), SIGKILL if it is still there after ``term_wait`` seconds."""
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"{what} (pid {proc.pid}) did not stop")
