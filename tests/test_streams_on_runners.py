"""The stream windowing on both local streaming runners, with the same results: TestStream
scenarios (tests/stream_fixtures.py) for on-time windows, allowed lateness and its late pane,
early firings, and late-data regrouping, on BundleBasedDirectRunner and on Prism.

Prism must be of the SDK's version (scripts/setup-prism builds .venv's): Prism 2.62 refused this
windowing at submission, and newer Prism needs a worker id that SDK 2.62 does not send. Pane
timing: 0 early, 1 on time, 2 late (Beam's PaneInfoTiming); Observation ids as indexes.
"""
import time

import pytest

import stream_fixtures
from pipelines.run import java_artifacts
from pipelines.run.runners import fill_cached_runner_artifacts

EARLY, ON_TIME, LATE = 0, 1, 2

EXPECTED = {
    "on_time_windows": {"obs": [[ON_TIME, 0, "61 E E E E E"], [ON_TIME, 0, "70 E E E E E"]],
                        "dead": [["normalization", "InvalidDataFormatException"]]},
    # the late reading is its own (late) pane of the same Observation, merged by the writer
    "late_pane": {"obs": [[ON_TIME, 0, "61 E E E E E"], [LATE, 0, "99 E E E E E"]], "dead": []},
    "early_firing": {"obs": [[EARLY, 0, "60 E E E E E"], [ON_TIME, 0, "61 E E E E E"]], "dead": []},
    # two days late, past the lateness: regrouped into a new window, same Observation id
    "regrouped": {"obs": [[ON_TIME, 0, "60 E E E E E"], [ON_TIME, 0, "99 E E E E E"]], "dead": []},
    "dropped_without_regrouping": {"obs": [[ON_TIME, 0, "60 E E E E E"]], "dead": []},  # the control
}

RUNNERS = [pytest.param("BundleBasedDirectRunner", id="bundle-direct"),
           pytest.param("PrismRunner", id="prism", marks=pytest.mark.prism)]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
@pytest.mark.timeout(60)  # ~1-5 s each idle
def test_stream_scenario(runner, scenario, tmp_path, capsys):
    argv = fill_cached_runner_artifacts(["--runner=" + runner])
    if runner == "PrismRunner" and java_artifacts.prism_binary() is None:
        pytest.fail("no cached Prism for this Beam version: run scripts/setup (scripts/setup-prism)")
    if runner == "PrismRunner":  # as a user names it: the launcher adds the cached binary
        assert "--prism_location=" + java_artifacts.prism_binary() in argv
    started = time.monotonic()
    got = stream_fixtures.run(scenario, argv, tmp_path)
    with capsys.disabled():
        print(f"\n[{runner} {java_artifacts.beam_version()}] {scenario} {time.monotonic() - started:.1f}s")
    assert got == EXPECTED[scenario]


def test_every_scenario_has_its_expected_panes():
    assert sorted(stream_fixtures.SCENARIOS) == sorted(EXPECTED)
