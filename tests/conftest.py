"""Shared fixtures.

``vectors`` gives the iomt-fhir conformance vectors from ``../shared/conformance``
(beside the repository); tests that need them skip with a reason when a user's clone
does not have that folder, and fail under CI (``ci_fixtures.missing``). The vectors are
never copied into the repo.
"""
import json
import os
import pathlib

import pytest

from ci_fixtures import missing

REPO = pathlib.Path(__file__).resolve().parent.parent
VECTORS = pathlib.Path(os.environ.get(
    "IOMT_VECTORS", REPO.parent / "shared" / "conformance" / "iomt-fhir"))

# Every process a test starts (``iomt-fhir`` console script, scripts, job workers) imports this
# checkout's code first. Without it a venv's editable install decides: a venv shared by git
# worktrees, or installed from another clone, would run that other tree's code while the test
# reads this one's.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])


def vector_dir(name: str) -> pathlib.Path:
    """Path of one vector folder; when absent, skip the test (fail it under CI)."""
    if not VECTORS.is_dir():
        missing(f"conformance vectors not found at {VECTORS} (set IOMT_VECTORS)")
    matches = sorted(VECTORS.glob(name + "*"))
    if not matches:
        missing(f"vector {name} not found under {VECTORS}")
    return matches[0]


def load_json(path) -> object:
    with open(path, encoding="utf-8-sig") as f:
        return json.load(f)


@pytest.fixture
def vectors():
    return vector_dir

# FHIR server / fault proxy fixtures (tests/fhir_fixtures.py) and the Pub/Sub emulator
# (tests/pubsub_fixtures.py), the Kafka broker (tests/kafka_fixtures.py), the stub Kafka expansion service
# (tests/kafka_stub_fixtures.py); tests/ is on sys.path (no __init__.py).
pytest_plugins = ["fhir_fixtures", "pubsub_fixtures", "storage_fixtures", "kafka_fixtures",
                  "kafka_stub_fixtures", "leg_fixtures"]

# Heavy tests without their own @pytest.mark.timeout get a bound by kind instead of pytest.ini's
# 120 s default (~3x their time on an idle 2-core machine: a Kafka e2e on Flink takes up to
# ~150 s, the broker's start ~30 s). An explicit mark on a test always wins; first match applies.
TIMEOUT_BY_MARKERS = ((("kafka_broker", "flink"), 600), (("outage",), 480), (("flink",), 300),
                      (("kafka_broker",), 240))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        for markers, seconds in TIMEOUT_BY_MARKERS:
            if all(item.get_closest_marker(m) is not None for m in markers):
                item.add_marker(pytest.mark.timeout(seconds))
                break
