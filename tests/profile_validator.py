"""HAPI FHIR's validator (scripts/java/profile-validator, built by scripts/setup-profile-validator), from Python.

``validate(items)`` sends every ``(name, profiles, resource)`` through ONE JVM run (building
the validator costs seconds, each resource milliseconds) and returns ``{name: [issues]}``,
each issue ``(severity, location, message)``. ``errors(issues)`` keeps errors and fatals.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import Dict, Iterable, List, Sequence, Tuple

from ci_fixtures import missing

REPO = pathlib.Path(__file__).resolve().parent.parent
POM = REPO / "scripts" / "java" / "profile-validator" / "pom.xml"
TIMEOUT = 280  # seconds for one batch (the tests' own bound is 300 s)

Issue = Tuple[str, str, str]


def validator_dir() -> pathlib.Path:
    version = re.search(r"<hapi.version>(.*)</hapi.version>", POM.read_text()).group(1)
    cache = pathlib.Path(os.environ.get("IOMT_CACHE", pathlib.Path.home() / ".cache" / "iomt-fhir"))
    return cache / "java" / f"profile-validator-{version}"


def require_validator() -> pathlib.Path:
    """The built validator; skip (fail under CI) without Java or when setup did not build it."""
    if shutil.which("java") is None:
        missing("Java not installed: HAPI FHIR's validator needs Java 17 (scripts/setup-profile-validator)")
    d = validator_dir()
    if not (d / "classes" / "ValidateProfiles.class").exists():
        missing(f"no profile validator in {d}: run scripts/setup (it calls scripts/setup-profile-validator)")
    return d


def validate(items: Iterable[Tuple[str, Sequence[str], dict]]) -> Dict[str, List[Issue]]:
    d = require_validator()
    lines = []
    names = []
    for name, profiles, resource in items:
        assert "\t" not in name and "\n" not in name
        names.append(name)
        lines.append(f"{name}\t{','.join(profiles)}\t{json.dumps(resource, separators=(',', ':'))}\n")
    # C1 only and the serial GC: a short batch run, where C2's compiler threads and parallel GC
    # threads cost more CPU than they save (user time 16 s -> 6 s for the same batch here).
    proc = subprocess.run(["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp", f"{d / 'classes'}{os.pathsep}{d / 'lib' / '*'}", "ValidateProfiles"],
                          input="".join(lines), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: Dict[str, List[Issue]] = {}
    done = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "ISSUE":
            out.setdefault(parts[1], []).append((parts[2], parts[3], parts[4]))
        elif parts[0] == "DONE":
            done[parts[1]] = int(parts[2])
            out.setdefault(parts[1], [])
    assert sorted(done) == sorted(names), "the validator did not answer for every resource"
    assert all(n >= 0 for n in done.values()), done
    return out


def errors(issues: List[Issue]) -> List[Issue]:
    return [i for i in issues if i[0] in ("error", "fatal")]
