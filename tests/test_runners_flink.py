"""The pipeline on Flink for real: Beam's Flink job server (the launcher jar scripts/setup-java
cached) with an embedded Flink cluster (``--flink_master=[local]``) and Python workers in the
launching process (LOOPBACK), against the local FHIR server."""
import shutil

import pytest

from pipelines.run import java_artifacts
import runner_e2e
from ci_fixtures import need

pytestmark = [pytest.mark.flink, pytest.mark.fhir_server]

# What the README tells a user to type; the launcher adds the cached --flink_job_server_jar.
FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK"]


@pytest.fixture(scope="module", autouse=True)
def flink_job_server_cached():
    need(shutil.which("java") is not None, "Java not installed: Flink's job server is a Java program")
    if java_artifacts.flink_job_server_jar() is None:
        pytest.fail("no cached Flink job server for this Beam version: run scripts/setup (scripts/setup-java)")


@pytest.mark.timeout(300)  # ~74 s idle: job server start, two runs
def test_backfill_on_flink_matches_fnapi_and_a_replay_writes_nothing(tmp_path, fhir_base_url, unique, capsys):
    seconds = runner_e2e.check_backfill(FLINK, tmp_path, fhir_base_url, unique)
    with capsys.disabled():
        print(f"\n[flink] first run {seconds['first']:.1f}s, replay {seconds['replay']:.1f}s")
