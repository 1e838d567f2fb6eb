"""Session fixtures: real storage emulators on loopback for the archive tests (registered
from conftest.py), each started once and stopped at the end of the session.

* ``azurite``: Microsoft's Azure Storage emulator (npm, installed by scripts/setup-azurite
  into ``${IOMT_CACHE:-~/.cache/iomt-fhir}/azurite-VERSION``; override with ``AZURITE_BLOB``).
* ``gcs_emulator``: gcp-storage-emulator (PyPI, in the venv), in memory.
* ``s3_server``: moto in server mode (PyPI, in the venv).

They hold no real secret: Azurite's account key is its published development key; moto
accepts any key. Tests hand credentials to Beam through the environment
(``monkeypatch.setenv``), the way users do, never through pipeline options.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import pytest

from ci_fixtures import missing
from local_processes import free_port, log_tail, stop_process_group

AZURITE_VERSION = "3.37.0"
AZURITE_BLOB = pathlib.Path(os.environ.get("AZURITE_BLOB", pathlib.Path(
    os.environ.get("IOMT_CACHE", pathlib.Path.home() / ".cache" / "iomt-fhir"))
    / f"azurite-{AZURITE_VERSION}" / "node_modules" / ".bin" / "azurite-blob"))
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, in Microsoft's docs); not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BIN = pathlib.Path(sys.executable).parent
READY_TIMEOUT = 60.0


class Emulator(NamedTuple):
    endpoint: str  # http://127.0.0.1:PORT (Azurite: with the account path)
    port: int


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{log_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not listening after {READY_TIMEOUT}s:\n{log_tail(log)}")


def _launch(argv, workdir: pathlib.Path):
    log = workdir / "emulator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=workdir, start_new_session=True)
    return proc, log


def _commands(root: pathlib.Path):
    """(name, argv, port, workdir, skip reason) of each emulator."""
    out = []
    for name in ("azurite", "gcs", "s3"):
        (root / name).mkdir()
    port = free_port()
    out.append(("azurite", [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                            "--location", str(root / "azurite" / "data"), "--skipApiVersionCheck",
                            "--disableProductStyleUrl"],
                port, root / "azurite", None if AZURITE_BLOB.exists() else
                f"Azurite not installed at {AZURITE_BLOB} (run scripts/setup-azurite, or set AZURITE_BLOB)"))
    exe, port = BIN / "gcp-storage-emulator", free_port()
    out.append(("gcs", [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                port, root / "gcs", None if exe.exists() else f"gcp-storage-emulator not installed in {BIN} "
                                                              "(scripts/setup installs the test extras)"))
    exe, port = BIN / "moto_server", free_port()
    out.append(("s3", [str(exe), "-H", "127.0.0.1", "-p", str(port)], port, root / "s3",
                None if exe.exists() else f"moto_server not installed in {BIN} (scripts/setup installs the test extras)"))
    return out


class _Launch:
    """The emulators' processes, started once per session (see ``pytest_collection_finish``)."""
    root = None
    missing = {}
    started = []  # (name, proc, log, port)

    @classmethod
    def start(cls):
        if cls.root is not None:
            return
        cls.root = pathlib.Path(tempfile.mkdtemp(prefix="iomt-storage-emulators-"))
        for name, argv, port, work, missing in _commands(cls.root):
            if missing:
                cls.missing[name] = missing
            else:
                proc, log = _launch(argv, work)
                cls.started.append((name, proc, log, port))

    @classmethod
    def stop(cls):
        for name, proc, _, _ in cls.started:
            # 0.5 s: emulators keep nothing worth flushing (data is in a temporary folder or memory)
            stop_process_group(proc, name, 0.5)
        cls.started = []
        if cls.root is not None:
            shutil.rmtree(cls.root, ignore_errors=True)
            cls.root = None


def pytest_collection_finish(session):
    """Start the emulators as soon as the run is known to need them, so they load (Azurite
    takes seconds) while the tests before them run, instead of one after the other."""
    if any("storage_emulators" in getattr(item, "fixturenames", ()) for item in session.items):
        _Launch.start()


def pytest_sessionfinish(session):
    _Launch.stop()


@pytest.fixture(scope="session")
def storage_emulators():
    """``{name: (process, log, port) or skip reason}``; each emulator's own fixture waits for it."""
    _Launch.start()
    result = dict(_Launch.missing)
    result.update({name: (proc, log, port) for name, proc, log, port in _Launch.started})
    try:
        yield result
    finally:
        _Launch.stop()


def _one(emulators, name):
    value = emulators[name]
    if isinstance(value, str):
        missing(value)  # a skip reason; a failure under CI
    proc, log, port = value
    _wait_port(port, proc, name, log)
    return Emulator(f"http://127.0.0.1:{port}" + (f"/{AZURITE_ACCOUNT}" if name == "azurite" else ""), port)


@pytest.fixture(scope="session")
def azurite(storage_emulators):
    return _one(storage_emulators, "azurite")


def azurite_connection_string(emulator: Emulator, sas: str = None) -> str:
    if sas:
        return f"BlobEndpoint={emulator.endpoint};SharedAccessSignature={sas}"
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={emulator.endpoint};")


@pytest.fixture(scope="session")
def gcs_emulator(storage_emulators):
    return _one(storage_emulators, "gcs")


@pytest.fixture(scope="session")
def s3_server(storage_emulators):
    return _one(storage_emulators, "s3")
