"""Runner names a user types, resolved before Beam parses them.

Beam 2.62 (the version whose Java jars are served here; see setup.py) no longer lists
``FnApiRunner`` among its known runner names, but it is the portable in-process batch
runner that needs nothing besides Python, and the README's examples use it. The alias
is resolved here, in the launcher, instead of patching Beam's private runner table.
"""
from typing import List

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"

ALIASES = {"fnapirunner": FN_API_RUNNER}


def resolve_runner_aliases(argv: List[str]) -> List[str]:
    """``--runner=FnApiRunner`` (or ``--runner FnApiRunner``) -> Beam's fully qualified name."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--runner="):
            name = arg.split("=", 1)[1]
            out[i] = "--runner=" + ALIASES.get(name.lower(), name)
        elif arg == "--runner" and i + 1 < len(out):
            out[i + 1] = ALIASES.get(out[i + 1].lower(), out[i + 1])
    return out
