"""The pipeline on Prism, Beam's portable runner in Go, as scripts/setup-prism cached it (at the
installed Beam's version): the batch backfill end to end against the local FHIR server. The stream
windowing on Prism (TestStream: lateness, early firings, late panes, regrouping) is in
tests/test_streams_on_runners.py, beside the same scenarios on BundleBasedDirectRunner.
"""
import pytest

from pipelines.run import java_artifacts
import runner_e2e

pytestmark = pytest.mark.prism


@pytest.fixture(scope="module", autouse=True)
def prism_cached():
    if java_artifacts.prism_binary() is None:
        pytest.fail("no cached Prism for this Beam version: run scripts/setup (scripts/setup-prism)")


@pytest.mark.fhir_server
@pytest.mark.timeout(180)  # ~16 s idle: two runs on Prism
def test_backfill_on_prism_matches_fnapi_and_a_replay_writes_nothing(tmp_path, fhir_base_url, unique, capsys):
    seconds = runner_e2e.check_backfill(["--runner=PrismRunner"], tmp_path, fhir_base_url, unique)
    with capsys.disabled():
        print(f"\n[prism] first run {seconds['first']:.1f}s, replay {seconds['replay']:.1f}s")
