"""scripts/test's two legs (tests/leg_fixtures.py): each test runs in exactly one environment."""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent

SAMPLE = '''
import pytest

def test_plain(): pass

@pytest.mark.flink
def test_on_flink(): pass

@pytest.mark.java_jars
def test_kafka_expansion(): pass

'''


def collected(tmp_path, leg):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = dict(os.environ, PYTHONPATH=str(HERE))
    env.pop("IOMT_TEST_LEG", None)
    if leg is not None:
        env["IOMT_TEST_LEG"] = leg
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "-p", "leg_fixtures", "-p", "no:cacheprovider",
                          "-c", os.devnull, "-W", "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    return run.returncode, sorted(line.split("::")[1] for line in run.stdout.splitlines() if "::" in line), run.stderr


@pytest.mark.parametrize("leg, want", [
    ("main", ["test_plain"]),
    ("java_jars", ["test_kafka_expansion", "test_on_flink"]),
    (None, ["test_kafka_expansion", "test_on_flink", "test_plain"]),
])
def test_each_test_is_in_one_leg(tmp_path, leg, want):
    code, names, err = collected(tmp_path, leg)
    assert (code, names) == (0, want), err


def test_an_unknown_leg_is_refused(tmp_path):
    code, names, err = collected(tmp_path, "flink")
    assert code != 0 and "IOMT_TEST_LEG='flink'" in err, err
