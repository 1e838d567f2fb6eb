"""``scripts/demo`` prints what the README says it prints (README "Quick start"), run as a user
runs it: a fresh local FHIR server, the sample data written twice, the counts of what the
server holds. Why: the README's block was written by hand once, and nothing noticed when a
counter or a default changed what the demo prints."""
import os
import re
import subprocess

import pytest

from conftest import REPO


def readme_block():
    """The lines of the code block after "and prints:" in README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"and prints:\n\n```\n(.*?)```", text, re.S)
    assert block, "README.md no longer shows what scripts/demo prints"
    return block.group(1).splitlines()


@pytest.mark.fhir_server
@pytest.mark.timeout(240)  # ~6 s idle: the server's start and two runs
def test_demo_prints_what_the_readme_says(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([str(REPO / "scripts" / "demo")], capture_output=True, text=True, timeout=200,
                       env=dict(os.environ, IOMT_DEMO_OUT=str(out), IOMT_DEMO_SKIP_SETUP="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"FHIR server: http://127\.0\.0\.1:\d+/fhir", lines[0])
    expected = readme_block()
    printed = lines[1:1 + len(expected)]
    for want, got in zip(expected, printed):
        if want.endswith(" ..."):  # the README shortens long lines
            assert got.startswith(want[:-len("...")]), (want, got)
        else:
            assert got == want
    assert len(printed) == len(expected) == 4
    assert lines[1 + len(expected):] == [f"files: {out}/observations.jsonl, {out}/dead-letter.jsonl"]
