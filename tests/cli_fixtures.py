"""How tests run the ``iomt-fhir`` command as a user does: a separate process, so exit codes,
stderr and logging are the real ones (not pytest's capture).

``command()`` is the console script the venv installed, or the same entry point through
this Python when the package is not installed as a script (a bare checkout).
"""
import sys

from conftest import REPO

SCRIPT = REPO / ".venv" / "bin" / "iomt-fhir"


def command():
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main())"]
