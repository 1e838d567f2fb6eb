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
                  "kafka_stub_fixtures"]
