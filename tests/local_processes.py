"""Helpers for the real local services the tests start (FHIR server, Pub/Sub emulator):
a free loopback port, and a bounded wait until the service answers HTTP."""
from __future__ import annotations

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
