"""``iomt-fhir run`` exits 1 when the runner fails (README "Exit status": 0 all written, 1 a
failed run or failures dead-lettered, 2 refused at launch), with one line saying so.

A real failure, not a stub: the Observation output's folder is a regular file, which nothing
checks before the run, so Beam's file sink fails inside the runner. The command runs as a
separate process, as a user or a scheduler runs it, so the exit status is the real one."""
import subprocess

from cli_fixtures import command
from conftest import REPO


def test_a_failing_runner_exits_1_with_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    r = subprocess.run(command() + [
        "run", "--runner=FnApiRunner", f"--device-mapping={REPO / 'templates' / 'devicecontent.json'}",
        f"--fhir-mapping={REPO / 'templates' / 'fhirmapping.json'}",
        f"--input={REPO / 'templates' / 'sample' / '*.jsonl'}",
        f"--output={tmp_path / 'a-file' / 'obs'}", f"--dead-letter={tmp_path / 'dead'}"],
        capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    [line] = [l for l in r.stderr.splitlines() if l.startswith("iomt-fhir: error:")]
    assert line.startswith("iomt-fhir: error: the run failed: ") and "Not a directory" in line
    assert "(--debug shows the traceback)" in line
