"""``iomt-fhir run --streaming`` with no --runner runs, and its first line says which runner runs it.

Beam's default runner decides at run time; for a stream the launcher names
BundleBasedDirectRunner itself (pipelines/run/runners.py) so the user is told up front. The run
reads files as a stream: its dead letters carry no timestamp, which once failed Beam's windowed
file writer (transforms/sinks/json_files.py)."""
import glob
import json
import os
import subprocess
import sys

import pytest
import requests

from conftest import REPO
from pipelines.run.runners import runner_line, with_default_runner

IOMT_FHIR = os.path.join(os.path.dirname(sys.executable), "iomt-fhir")


def test_a_stream_without_runner_gets_bundle_based_direct_and_says_so():
    assert with_default_runner(["--streaming"], True) == ["--streaming", "--runner=BundleBasedDirectRunner"]
    assert with_default_runner(["--runner=PrismRunner"], True) == ["--runner=PrismRunner"]
    assert with_default_runner([], False) == []
    assert runner_line(["--runner=BundleBasedDirectRunner"], []) == \
        "iomt-fhir: runner: BundleBasedDirectRunner (a stream, no --runner given)"
    assert runner_line(["--runner=PrismRunner"], ["--runner=PrismRunner"]) == "iomt-fhir: runner: PrismRunner"
    assert runner_line([], []).startswith("iomt-fhir: runner: DirectRunner (no --runner given")


@pytest.mark.fhir_server
@pytest.mark.timeout(120)  # ~6 s idle
def test_streaming_run_without_runner_runs_and_first_line_names_the_runner(tmp_path, empty_fhir_base_url):
    fhir_base_url = empty_fhir_base_url
    argv = [IOMT_FHIR, "run", "--streaming", f"--device-mapping={REPO / 'templates/devicecontent.json'}",
            f"--fhir-mapping={REPO / 'templates/fhirmapping.json'}",
            f"--input={REPO / 'templates/sample/messages.jsonl'}",
            f"--fhir-url={fhir_base_url}", f"--dead-letter={tmp_path / 'dead'}"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.splitlines()[0] == "iomt-fhir: runner: BundleBasedDirectRunner (a stream, no --runner given)"
    dead = [json.loads(line) for f in glob.glob(str(tmp_path / "dead" / "*")) for line in open(f) if line.strip()]
    assert sorted(r["error_type"] for r in dead) == ["IncompatibleDataException", "InvalidDataFormatException"]
    found = requests.get(f"{fhir_base_url}/Observation", params={"_summary": "count"}, timeout=10).json()
    assert found["total"] == 27  # the README's demo: 27 Observations, on a server of its own


@pytest.mark.timeout(120)  # ~6 s idle
def test_streaming_run_to_files_without_runner_folds_each_observation_once(tmp_path):
    """Beam 2.77's streaming direct runner also fires empty panes: the file fold skips them."""
    argv = [IOMT_FHIR, "run", "--streaming", f"--device-mapping={REPO / 'templates/devicecontent.json'}",
            f"--fhir-mapping={REPO / 'templates/fhirmapping.json'}",
            f"--input={REPO / 'templates/sample/messages.jsonl'}",
            f"--output={tmp_path / 'obs'}", f"--dead-letter={tmp_path / 'dead'}"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    observations = [json.loads(line) for f in glob.glob(str(tmp_path / "obs" / "*")) for line in open(f)
                    if line.strip()]
    assert len({o["id"] for o in observations}) == 27
