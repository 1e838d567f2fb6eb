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


#: Runners that read Beam's PortableOptions (``--output_executable_path`` among them);
#: DirectRunner hands some pipelines to Prism.
PORTABLE_RUNNER_KEYS = ("flink", "prism", "spark", "portable", "direct")


def _runner_key(name: str) -> str:
    """'FlinkRunner', 'flink', 'apache_beam...flink_runner.FlinkRunner' -> 'flink' (as Beam matches)."""
    key = name.rsplit(".", 1)[-1].lower()
    return key[:-len("runner")] if key.endswith("runner") else key


def _given(argv: List[str], flag: str) -> bool:
    """Whether ``--flag`` was given, in Beam's ``--flag=v`` / ``--flag v`` forms (also ``-`` for ``_``)."""
    names = {flag, flag.replace("_", "-")}
    return any(arg in names or arg.split("=", 1)[0] in names for arg in argv)


def _value(argv: List[str], flag: str) -> str:
    value = ""
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def fill_cached_runner_artifacts(argv: List[str]) -> List[str]:
    """Point Beam at what scripts/setup cached, unless the user chose otherwise.

    Without this Beam downloads the Flink job server jar and the Prism binary at run time
    (Maven Central / GitHub releases), which machines without that access cannot do:

    - FlinkRunner: ``--flink_job_server_jar`` = the cached launcher jar. Not with
      ``--flink_submit_uber_jar``: that uploads the jar itself to a cluster, and the cached
      launcher is only a manifest over jars on this machine.
    - PrismRunner, and DirectRunner (which in Beam 2.62 hands to Prism the pipelines its
      FnApiRunner cannot run, e.g. unbounded reads): ``--prism_location`` = the cached binary.

    A flag the user gave always wins; with nothing cached the argv is returned unchanged.

    Also on the portable runners: the pipeline's ``--output`` would otherwise *also* set Beam's
    ``--output_executable_path`` (Beam parses each options view with argparse's prefix
    matching), and Flink/Prism would then write a jar to that path instead of running the job.
    """
    from pipelines import java_artifacts

    out = list(argv)
    key = _runner_key(_value(out, "--runner")) or "direct"  # Beam's default runner
    if (key in PORTABLE_RUNNER_KEYS and _given(out, "--output")
            and not _given(out, "--output_executable_path")):
        out.append("--output_executable_path=")
    if key == "flink":
        jar = java_artifacts.flink_job_server_jar()
        if jar and not _given(out, "--flink_job_server_jar") and not _given(out, "--flink_submit_uber_jar"):
            out.append("--flink_job_server_jar=" + jar)
    elif key in ("prism", "direct"):
        binary = java_artifacts.prism_binary()
        if binary and not _given(out, "--prism_location"):
            out.append("--prism_location=" + binary)
    return out
