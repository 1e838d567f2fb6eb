"""One whole run whose logs never show a message body or an identifier, on every failure path.

The quality bar: bodies and identifiers (PHI) go to the dead-letter files, never to a log.
Each path was checked alone in its module; this runs ``iomt-fhir run`` once, as a separate
process, with every identifier and body holding one marker, through the fault proxy, so that
each stage fails for one reading: normalization (not JSON; no time), conversion (not a FHIR
decimal), identity (no patient to create), write refused (422 on its transaction) and server
down (its transactions' connections reset until the outage budget is spent). Logging is on at
INFO for everything and DEBUG for ``pipelines`` and ``transforms``. The dead letters prove every
path was taken; then stderr (where the logs go) must not hold the marker anywhere.
"""
import json
import subprocess
import sys

import pytest

from fault_proxy import Fault
from pipeline_fixtures import DEVICE, FHIR, read_lines
from conftest import REPO
from transforms.mapping.identifiers import device_resource_id

pytestmark = pytest.mark.fhir_server

# The command as the console script runs it, with logging configured the way a worker does.
LOGGED_CLI = ("import logging, sys; logging.basicConfig(level=logging.INFO); "
              "[logging.getLogger(n).setLevel(logging.DEBUG) for n in ('pipelines', 'transforms')]; "
              "from pipelines.cli import main; sys.exit(main())")


def reading(dev, minute, hr=60, pat=True, at=None, mark=""):
    body = {"hr": hr, "dev": f"{mark}-{dev}", "at": at or f"2026-03-01T10:{minute:02d}:00Z"}
    if pat:
        body["pat"] = f"{mark}-pat-{dev}"
    return json.dumps(body)


@pytest.mark.timeout(180)  # ~10 s idle, with a 3 s outage budget
def test_no_marker_in_the_logs_on_any_failure_path(tmp_path, fault_proxy, unique):
    mark = f"phimark{unique}"
    lines = [reading("ok", 0, mark=mark), reading("ok", 10, 61, mark=mark),
             "{broken " + mark,                                        # normalization: not JSON
             reading("notime", 0, at=f"never-{mark}", mark=mark),      # normalization: no time
             reading("nan", 0, hr="NaN", mark=mark),                   # fhir_conversion
             reading("nopatient", 0, pat=False, mark=mark),            # identity: no patient to create
             reading("refused", 0, mark=mark),                         # fhir_write: 422
             reading("down", 0, mark=mark)]                            # fhir_write: connection reset
    (tmp_path / "dm.json").write_text(DEVICE)
    (tmp_path / "fm.json").write_text(FHIR)
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")

    def writes_of(dev):  # an Observation's body names its Device by logical id (Create: a hash)
        return dict(method="PUT", path_contains="/Observation/",
                    body_contains=f"Device/{device_resource_id(f'{mark}-{dev}')}".encode())
    fault_proxy.add(*[Fault("status", 422, **writes_of("refused")) for _ in range(5)])
    fault_proxy.add(*[Fault("reset", **writes_of("down")) for _ in range(100)])
    try:
        r = subprocess.run([sys.executable, "-c", LOGGED_CLI, "run", "--runner=FnApiRunner",
                            f"--device-mapping={tmp_path / 'dm.json'}", f"--fhir-mapping={tmp_path / 'fm.json'}",
                            f"--input={tmp_path / 'in.jsonl'}", f"--fhir-url={fault_proxy.url}",
                            "--identity-mode=Create", "--bundle-size=1", "--fhir-outage-seconds=3",
                            f"--dead-letter={tmp_path / 'dead'}", "--single-file-outputs"],
                           capture_output=True, text=True, timeout=150, cwd=REPO)
    finally:
        fault_proxy.clear()
    dead = read_lines(tmp_path / "dead.jsonl")
    paths = sorted((d["stage"], d["error_type"]) for d in dead)
    writes = sorted(d["message"] for d in dead if d["stage"] == "fhir_write")
    assert r.returncode == 1, r.stderr[-3000:]  # infrastructure failures were dead-lettered
    assert paths == sorted([("normalization", "InvalidDataFormatException"),
                            ("normalization", "IncompatibleDataException"),
                            ("fhir_conversion", "FhirDataMappingException"),
                            ("identity", "ResourceIdentityNotDefinedException"),
                            ("fhir_write", "FHIRServiceError"), ("fhir_write", "FHIRServiceError")]), paths
    assert "answered 422" in writes[0] and "transport error: ConnectionError" in writes[1], writes
    assert mark in json.dumps(dead)  # the dead letters keep the input (that is where PHI belongs)
    assert "summary:" in r.stderr and r.stderr.count("\n") > 5  # the logs were there to look at
    assert mark not in r.stderr + r.stdout
