"""Which tests start the session's HAPI server and which get HAPI's bound (tests/fhir_fixtures.py):
a test that starts its own HAPI (``--postgres``) must not also start the session's, which would
start up beside it, idle, on the same two cores (that doubled its start-up when run alone)."""
import pytest

import fhir_fixtures


class FakeItem:
    """What the collection hook reads of a pytest item: fixture names, node id, markers."""

    def __init__(self, nodeid, fixturenames=(), markers=()):
        self.nodeid = nodeid
        self.fixturenames = list(fixturenames)
        self.markers = {m.name: m for m in markers}

    def get_closest_marker(self, name):
        return self.markers.get(name)

    def add_marker(self, marker, append=True):
        self.markers[marker.name] = marker.mark if hasattr(marker, "mark") else marker


@pytest.fixture
def starts(monkeypatch):
    calls = []
    monkeypatch.setattr(fhir_fixtures._HapiServer, "start", classmethod(lambda cls: calls.append(1)))
    return calls


def bound(item):
    return item.get_closest_marker("timeout").args[0]


def test_own_hapi_server_gets_the_bound_but_no_session_server(starts):
    own = FakeItem("tests/test_hapi_postgres.py::test_pg", ["unique"], [pytest.mark.hapi_server])
    plain = FakeItem("tests/test_x.py::test_plain", ["fhir_base_url"])
    fhir_fixtures.pytest_collection_modifyitems(None, None, [own, plain])
    assert starts == []
    assert bound(own) == fhir_fixtures.HAPI_TEST_TIMEOUT
    assert plain.get_closest_marker("timeout") is None


@pytest.mark.parametrize("item", [
    FakeItem("tests/test_hapi_server.py::test_rollback", ["hapi", "hapi_base_url"]),
    FakeItem("tests/test_writer.py::test_write[hapi]", ["fhir_base_url", "fhir_server_kind"]),
], ids=["fixture", "parametrized"])
def test_a_test_on_the_session_server_starts_it(starts, item):
    fhir_fixtures.pytest_collection_modifyitems(None, None, [item])
    assert starts == [1]
    assert bound(item) == fhir_fixtures.HAPI_TEST_TIMEOUT


def test_a_larger_bound_of_its_own_stays(starts):
    item = FakeItem("tests/t.py::test_long[hapi]", ["fhir_base_url"], [pytest.mark.timeout(900)])
    fhir_fixtures.pytest_collection_modifyitems(None, None, [item])
    assert bound(item) == 900
