"""``scripts/hapi-fhir-server --postgres``: the same HAPI server on a PostgreSQL the script
starts itself (Debian's package), as HAPI runs in production; the rest of the suite uses H2.

One test, about a minute (PostgreSQL's initdb, then HAPI's schema on it): the server answers,
a transaction with one refused entry is rolled back whole on PostgreSQL too, and stopping the
script stops PostgreSQL and removes its temporary cluster.
"""
import glob
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from ci_fixtures import need
from local_processes import free_port, log_tail, stop_process_group, wait_http_ready

REPO = pathlib.Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.hapi_server]

H = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def shared_tmp():
    """A folder user postgres can reach (pytest's tmp_path is under a private folder): the
    script's TMPDIR, so its temporary cluster is created, and must be removed, there."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="iomt-hapi-pg-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_postgres_server_rolls_back_and_cleans_up(shared_tmp, unique):
    tmp_path = shared_tmp
    need(bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")),
         "PostgreSQL not installed (scripts/setup-hapi-fhir-server installs it)")
    subprocess.run([str(REPO / "scripts/setup-hapi-fhir-server")], check=True)
    port = free_port()
    log_path = tmp_path / "server.log"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the script's temporary data folder goes here
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(REPO / "scripts/hapi-fhir-server"), "--port", str(port), "--postgres"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        base = f"http://127.0.0.1:{port}/fhir"
        try:
            wait_http_ready(base + "/metadata", proc, "HAPI FHIR server on PostgreSQL", 300,
                            lambda: log_tail(log_path))
            data = glob.glob(str(tmp_path / "hapi-fhir.*"))
            assert len(data) == 1 and os.path.isfile(os.path.join(data[0], "pg", "PG_VERSION"))
            assert "PostgreSQL" in log_path.read_text()
            s = requests.Session()
            assert s.put(f"{base}/Patient/pg-{unique}", json={"resourceType": "Patient", "id": f"pg-{unique}"},
                         headers=H, timeout=30).status_code == 201

            def obs(n, patient):
                return {"request": {"method": "PUT", "url": f"Observation/pgo-{unique}-{n}"},
                        "resource": {"resourceType": "Observation", "id": f"pgo-{unique}-{n}", "status": "final",
                                     "code": {"text": "hr"}, "subject": {"reference": f"Patient/{patient}"}}}
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [obs(0, f"pg-{unique}"), obs(1, f"nobody-{unique}")]}
            r = s.post(base, json=bundle, headers=H, timeout=60)
            assert r.status_code in (400, 404) and "HAPI-1094" in r.text  # the missing Patient
            assert s.get(f"{base}/Observation/pgo-{unique}-0", timeout=30).status_code == 404  # rolled back
        finally:
            stop_process_group(proc, "HAPI FHIR server on PostgreSQL", term_wait=60)
    deadline = time.monotonic() + 30
    while glob.glob(str(tmp_path / "hapi-fhir.*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not glob.glob(str(tmp_path / "hapi-fhir.*"))  # the cluster went with the server
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps  # no postgres left running on it
