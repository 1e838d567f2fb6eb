"""One batch backfill scenario, run end to end on a real runner against the local FHIR server.

Used by the Flink and Prism tests: the same input goes through the pipeline on FnApiRunner
(to files: the expected Observations) and through ``iomt-fhir run`` on the runner under test
(to the server), twice. The run is the console script in a subprocess, exactly as a user types
it, with no runner flags beyond the ones the README gives: the launcher finds the cached job
server / Prism. A subprocess also ends any job server Beam starts (Beam stops them at exit).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import requests

from pipelines.run import launch
from pipeline_fixtures import DEVICE, FHIR

RUN_TIMEOUT = 600


def lines_for(devices: Tuple[str, str]) -> List[str]:
    """Two devices over two hours, plus one bad line per stage that can reject a reading."""
    a, b = devices

    def m(dev, minute, hr):
        return json.dumps({"hr": hr, "dev": dev, "pat": "p-" + dev,
                           "at": f"2026-03-01T{10 + minute // 60:02d}:{minute % 60:02d}:00Z"})

    return [m(a, 0, 50), m(a, 10, 60), m(a, 20, 70), m(a, 30, 80), m(b, 5, 90), m(b, 65, 91),
            "{broken",  # normalization: not JSON
            json.dumps({"hr": 1, "dev": a, "pat": "p-" + a, "at": "never"}),  # normalization: no time
            m(a, 40, "NaN")]  # fhir_conversion: not a FHIR decimal


def write_inputs(d, devices) -> None:
    (d / "dm.json").write_text(DEVICE)
    (d / "fm.json").write_text(FHIR)
    (d / "in.jsonl").write_text("\n".join(lines_for(devices)) + "\n")


def read_lines(path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(obs: dict) -> Tuple[str, str, str]:
    return (obs["effectivePeriod"]["start"], obs["effectivePeriod"]["end"], obs["valueSampledData"]["data"])


def expected_on_fnapi(d) -> Dict[str, List[Tuple[str, str, str]]]:
    """Observations (period, data) by device on FnApiRunner, the runner the rest of the suite uses."""
    rc = launch.main(["--runner=FnApiRunner", f"--device-mapping={d / 'dm.json'}",
                            f"--fhir-mapping={d / 'fm.json'}", f"--input={d / 'in.jsonl'}",
                            f"--output={d / 'fnapi'}", f"--dead-letter={d / 'fnapi-dead'}",
                            "--window-seconds=3600", "--single-file-outputs"])
    assert rc == 0  # data errors alone do not fail a run (see run_summary)
    out: Dict[str, list] = {}
    for obs in read_lines(d / "fnapi.jsonl"):
        out.setdefault(obs["device"]["reference"].split("/", 1)[1], []).append(_series(obs))
    return {dev: sorted(v) for dev, v in out.items()}


def server_state(base: str, devices) -> Dict[str, List[Tuple[str, str, str, str, str]]]:
    """Observations on the server by device identifier: (period, data, id, versionId)."""
    out = {}
    for dev in devices:
        found = requests.get(f"{base}/Device", params={"identifier": dev}, timeout=10).json()
        (dev_id,) = [e["resource"]["id"] for e in found.get("entry", [])]
        obs = requests.get(f"{base}/Observation", params={"device": f"Device/{dev_id}", "_count": 100},
                           timeout=10).json().get("entry", [])
        out[dev] = sorted(_series(e["resource"]) + (e["resource"]["id"], e["resource"]["meta"]["versionId"])
                          for e in obs)
    return out


def run_cli(runner_args: List[str], d, base: str, dead: str) -> Tuple[int, str, float]:
    """``iomt-fhir run RUNNER_ARGS ...`` in a subprocess; (exit code, stderr, seconds)."""
    exe = os.path.join(os.path.dirname(sys.executable), "iomt-fhir")
    argv = [exe, "run", *runner_args, f"--device-mapping={d / 'dm.json'}", f"--fhir-mapping={d / 'fm.json'}",
            f"--input={d / 'in.jsonl'}", f"--fhir-url={base}", "--identity-mode=Create",
            f"--dead-letter={d / dead}", "--window-seconds=3600", "--single-file-outputs"]
    start = time.monotonic()
    # Its own process group: on a timeout the job server Beam started goes too.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"iomt-fhir run did not finish in {RUN_TIMEOUT}s:\n{err[-3000:]}")
    return proc.returncode, err, time.monotonic() - start


def summary(stderr: str) -> Dict[str, int]:
    """The counters of the run's ``summary:`` line (empty when the runner reported none)."""
    for line in stderr.splitlines():
        if line.startswith("summary:"):
            return {k: int(v) for k, v in (kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)}
    raise AssertionError("no summary line in:\n" + stderr[-3000:])


def check_backfill(runner_args: List[str], tmp_path, base: str, unique: str) -> Dict[str, float]:
    """The whole scenario; returns the seconds each run took (for the report)."""
    devices = (f"rt-{unique}-a", f"rt-{unique}-b")
    write_inputs(tmp_path, devices)
    expected = expected_on_fnapi(tmp_path)
    assert expected == {devices[0]: [("2026-03-01T10:00:00.0000000Z", "2026-03-01T10:59:59.9999999Z",
                                      "50 60 70 80 E E")],
                        devices[1]: [("2026-03-01T10:00:00.0000000Z", "2026-03-01T10:59:59.9999999Z",
                                      "90 E E E E E"),
                                     ("2026-03-01T11:00:00.0000000Z", "2026-03-01T11:59:59.9999999Z",
                                      "91 E E E E E")]}

    rc, err, first_s = run_cli(runner_args, tmp_path, base, "dead1")
    assert rc == 0, err[-3000:]
    first = server_state(base, devices)
    assert {dev: [s[:3] for s in v] for dev, v in first.items()} == expected
    counts = summary(err)
    assert counts.get("ObservationCreated") == 3 and "ObservationUpdated" not in counts, err[-3000:]
    dead = sorted((r["stage"], r["error_type"], bool(r["message"])) for r in read_lines(tmp_path / "dead1.jsonl"))
    assert dead == [("fhir_conversion", "FhirDataMappingException", True),
                    ("normalization", "IncompatibleDataException", True),
                    ("normalization", "InvalidDataFormatException", True)]

    rc, err, replay_s = run_cli(runner_args, tmp_path, base, "dead2")
    assert rc == 0, err[-3000:]
    assert server_state(base, devices) == first  # same ids, same versions: nothing written again
    counts = summary(err)
    assert counts.get("ObservationNoOperation") == 3, err[-3000:]
    assert "ObservationCreated" not in counts and "ObservationUpdated" not in counts, err[-3000:]
    assert len(read_lines(tmp_path / "dead2.jsonl")) == 3
    return {"first": first_s, "replay": replay_s}
