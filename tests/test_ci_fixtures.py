"""The skip-or-fail rule (tests/ci_fixtures.py): a missing tool skips on a user's clone and
fails under CI, so a CI machine whose setup broke cannot report green while testing nothing."""
import pytest

import conftest
from ci_fixtures import missing, need


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_missing_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="emulator absent.*a failure under CI"):
        missing("emulator absent")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_skips_elsewhere(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="emulator absent"):
        missing("emulator absent")


def test_need_passes_when_present(monkeypatch):
    monkeypatch.setenv("CI", "true")
    need(True, "never said")


def test_absent_vectors_fail_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(conftest, "VECTORS", tmp_path / "nowhere")
    with pytest.raises(pytest.fail.Exception, match="conformance vectors not found"):
        conftest.vector_dir("N01")


def test_every_test_is_bounded(request):
    # pytest.ini's default applies to every test without a larger @pytest.mark.timeout
    assert request.config.pluginmanager.hasplugin("timeout")
    assert 0 < float(request.config.getini("timeout")) <= 300


class _Item:
    """Just what conftest's timeout rule reads of a collected test."""

    def __init__(self, *markers):
        self.marks = {m.name: m for m in markers}

    def get_closest_marker(self, name):
        return self.marks.get(name)

    def add_marker(self, mark):
        self.marks[mark.name] = mark.mark


def test_heavy_tests_without_a_mark_are_bounded_by_kind():
    kafka_e2e = _Item(pytest.mark.kafka_broker.mark, pytest.mark.flink.mark)
    flink = _Item(pytest.mark.flink.mark)
    marked = _Item(pytest.mark.flink.mark, pytest.mark.timeout(42).mark)
    plain = _Item()
    conftest.pytest_collection_modifyitems(None, [kafka_e2e, flink, marked, plain])
    assert [i.get_closest_marker("timeout") and i.get_closest_marker("timeout").args
            for i in (kafka_e2e, flink, marked, plain)] == [(600,), (300,), (42,), None]
